"""`python -m hsr_diffusers.cli ...`, the form `accelerate launch -m hsr_diffusers.cli reconstruct ...` runs."""

import sys

from hsr_diffusers.cli import main


sys.exit(main())

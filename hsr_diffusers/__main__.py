import sys

from hsr_diffusers.cli import main


sys.exit(main())

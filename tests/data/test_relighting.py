"""Relighting of reflectance patches (`hsr_diffusers.data.degradation.Relighting`), stage by stage."""

import numpy as np
import pytest

from hsr_diffusers.data.degradation import RELIGHTING_ILLUMINANTS, Relighting, illuminant_spectrum
from hsr_diffusers.spectral import rendering_matrix
from tests.testing_utils import smooth_cube


WAVELENGTHS = np.arange(400.0, 701.0, 10.0)


def test_illuminants_are_drawn_from_the_families_and_the_cct_range():
    relighting = Relighting(daylight_probability=0.5, cct_range=(5000, 6000))
    rng = np.random.default_rng(0)
    names = [relighting.sample(rng) for _ in range(400)]
    daylight = [name for name in names if name.startswith("D") and name.endswith("K")]
    assert 120 < len(daylight) < 280  # about half
    assert all(5000 <= float(name[1:-1]) <= 6000 for name in daylight)
    others = set(names) - set(daylight)
    assert others <= set(RELIGHTING_ILLUMINANTS) and {"A", "FL2"} & others
    assert {relighting.sample(np.random.default_rng(0)) for _ in range(3)} == {names[0]}  # same seed, same light
    only_daylight = Relighting(daylight_probability=1.0)
    assert all(only_daylight.sample(rng).startswith("D") for _ in range(20))


def test_illuminant_spectra_have_mean_one_and_the_expected_colour():
    incandescent, daylight = illuminant_spectrum("A", WAVELENGTHS), illuminant_spectrum("D6504K", WAVELENGTHS)
    assert incandescent.shape == (31,) and np.isclose(incandescent.mean(), 1.0) and np.isclose(daylight.mean(), 1.0)
    assert incandescent[-1] > 3 * incandescent[0]  # A is red-heavy
    assert illuminant_spectrum("D10000K", WAVELENGTHS)[0] > illuminant_spectrum("D4000K", WAVELENGTHS)[0]
    fluorescent = illuminant_spectrum("FL2", WAVELENGTHS)
    assert fluorescent.max() > 2 * np.median(fluorescent)  # mercury lines
    with pytest.raises(ValueError, match="Unknown illuminant"):
        illuminant_spectrum("sunlight", WAVELENGTHS)
    with pytest.raises(ValueError, match="4000-25000"):
        illuminant_spectrum("D3000K", WAVELENGTHS)


def test_relighting_multiplies_the_reflectance_by_the_drawn_spectrum():
    cube = smooth_cube(8, 8)
    relighting = Relighting()
    radiance = relighting(cube, WAVELENGTHS, np.random.default_rng(3))
    expected = cube * illuminant_spectrum(relighting.sample(np.random.default_rng(3)), WAVELENGTHS)
    assert radiance.dtype == np.float32 and np.allclose(radiance, expected, atol=1e-6)
    again = relighting(cube, WAVELENGTHS, np.random.default_rng(3))
    assert np.array_equal(radiance, again)
    assert not np.allclose(radiance, relighting(cube, WAVELENGTHS, np.random.default_rng(4)))


def test_a_white_surface_renders_the_colour_of_the_light():
    white = np.ones((2, 2, 31), dtype=np.float32)
    matrix = rendering_matrix("cie1964_ntire2020", WAVELENGTHS)
    under_a = Relighting(daylight_probability=0.0, illuminants=("A",))(white, WAVELENGTHS, np.random.default_rng(0))
    rgb = (under_a @ matrix)[0, 0]
    assert rgb[0] > 1.5 * rgb[2]  # incandescent white is orange
    blue_sky = Relighting(daylight_probability=1.0, cct_range=(10000, 10000))(
        white, WAVELENGTHS, np.random.default_rng(0)
    )
    sky = (blue_sky @ matrix)[0, 0]
    assert sky[2] > sky[0]


def test_relighting_checks_its_settings():
    with pytest.raises(ValueError, match="daylight_probability"):
        Relighting(daylight_probability=1.5)
    with pytest.raises(ValueError, match="cct_range"):
        Relighting(cct_range=(2000, 6000))

"""`benchmarks/results/` holds what the documentation cites, and the documented accuracy tables match the JSON results.

The documentation: README.md, each bundled model's card (its folder's README.md) and train_scripts/README.md. A results
file may also be cited by a results file that is itself cited (a note pointing at its measurement), or by the candidate
record of a bundled model.
"""

import json
import re
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "benchmarks" / "results"
CARDS = sorted((REPO_ROOT / "hsr_diffusers" / "pretrained").glob("*/README.md"))
DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "train_scripts" / "README.md", *CARDS]
CONDITIONS = ("clean", "noise_jpeg", "cameras")


def readme_performance() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    return text.split("\n## Performance\n", 1)[1].split("\n## ", 1)[0]


def cited_paths(text: str) -> set[str]:
    """`benchmarks/results/...` paths in a text, and the bare `name.md` / `name.json` it names in backticks."""
    paths = {match.rstrip(".,;:") for match in re.findall(r"benchmarks/results/([\w.*/-]+)", text)}
    return paths | set(re.findall(r"`([\w*-]+\.(?:md|json))`", text))


def test_every_results_path_the_documentation_cites_exists():
    texts = [path.read_text() for path in DOCS]
    cited = set().union(*(re.findall(r"benchmarks/results/([\w.*/-]+)", text) for text in texts))
    cited = {path.rstrip(".,;:") for path in cited} | cited_paths(readme_performance())
    assert cited, "the documentation cites no results"
    missing = sorted(path for path in cited if not list(RESULTS.glob(path)))
    assert not missing, f"cited but not in benchmarks/results/: {missing}"


def test_every_results_file_is_cited():
    files = {path.relative_to(RESULTS).as_posix() for path in RESULTS.rglob("*") if path.is_file()}
    reached, texts = set(), [path.read_text() for path in DOCS]
    while texts:  # a file is cited by the documentation, or by a results file that is
        text = texts.pop()
        names = cited_paths(text)
        for name in files - reached:
            folder = str(Path(name).parent)
            if name in names or Path(name).name in text or (folder != "." and folder in names):
                reached.add(name)
                texts.append((RESULTS / name).read_text())
            elif any(Path(name).match(pattern) for pattern in names if "*" in pattern):
                reached.add(name)
                texts.append((RESULTS / name).read_text())
    assert not files - reached, f"results files nothing cites (delete them or cite them): {sorted(files - reached)}"


def method_of(label: str) -> str:
    """The `benchmarks/cave_tables.py --models` name of a table row, from its label."""
    label = label.lower()
    for keyword, method in (
        ("64 px tiles", "pixelgan_tiles64"),
        ("ddpm second generation", "ddpm_v2"),
        ("pixelgan second generation", "pixelgan_v2"),
        ("first release", "pixelgan_first_release"),
        ("floor", "root_poly"),
        ("mst++ on the mix", "mst_mix"),
        ("mst++", "mst_plus_plus"),
        ("awan on the mix", "awan_mix"),
        ("awan", "awan"),
        ("ddpm", "ddpm"),
        ("pixelgan", "pixelgan"),
    ):
        if keyword in label:
            return method
    raise AssertionError(f"no cave_tables.py method for the row {label!r}")


def accuracy_rows(section: str) -> list[str]:
    rows = [line for line in section.splitlines() if line.startswith("| ") and re.search(r"\d\.\d{3}", line)]
    assert rows, "no accuracy table"
    return rows


def card_sections(header: str) -> list[tuple[str, str]]:
    """(model folder, section) of each bundled model's card that has a `header` section, up to the next `## `."""
    texts = [(card.parent.name, card.read_text()) for card in CARDS]
    return [
        (name, text.split(f"\n{header}", 1)[1].split("\n## ", 1)[0]) for name, text in texts if f"\n{header}" in text
    ]


def with_cited_results(sections: list[tuple[str, str]], stem: str) -> list[tuple[str, str, str]]:
    """(where, section, results JSON) for each section: the first `*<stem>.md` / `.json` the section cites (e.g.
    `bundled_cave_tables.json` for the stem `cave_tables`), else `<stem>.json`."""
    tables = []
    for where, section in sections:
        cited = re.search(rf"(\w*{stem})\.(?:md|json)", section)
        tables.append((where, section, f"{cited.group(1) if cited else stem}.json"))
    return tables


def documented_tables() -> list[tuple[str, str, str]]:
    """(where, section, results JSON) of every accuracy table: the README's "### Accuracy..." sections and each card's
    "## Evaluation"; a section is checked against the `*cave_tables.md` / `.json` it cites (default `cave_tables`)."""
    sections = [
        ("README.md " + part.split("\n", 1)[0], part.split("\n### ", 1)[0])
        for part in readme_performance().split("### Accuracy")[1:]
    ]
    return with_cited_results(sections + card_sections("## Evaluation"), "cave_tables")


@pytest.mark.parametrize(
    "where, section, results", documented_tables(), ids=[where for where, _, _ in documented_tables()]
)
def test_documented_accuracy_matches_cave_tables_json(where, section, results):
    summary = json.loads((RESULTS / results).read_text())["summary"]
    for row in accuracy_rows(section):
        label, *cells = [cell.strip() for cell in row.strip("|").split("|")]
        method = method_of(label)
        # RMSE and SAM under each condition, in that order, each maybe with its ratio to the floor: "0.0297 (0.86×)".
        values = re.findall(r"(\d+\.\d+)(?: \((\d+\.\d+)×\))?", " ".join(cell for cell in cells if "%" not in cell))
        assert len(values) >= 6, f"{where}: row {label!r} lacks RMSE and SAM under three conditions"
        for (value, ratio), (condition, metric) in zip(values, [(c, m) for c in CONDITIONS for m in ("rmse", "sam")]):
            measured, floor = summary[condition][method][metric], summary[condition]["root_poly"][metric]
            decimals = len(value.split(".")[1])
            assert f"{measured:.{decimals}f}" == value, f"{where}: {label!r} {condition} {metric} ({results})"
            if ratio:
                assert f"{measured / floor:.{len(ratio.split('.')[1])}f}" == ratio, f"{where}: {label!r} ratio"
        coverage = [cell for cell in cells if "%" in cell]
        if coverage:  # "90.5 / 89.3 / 91.4 %": ±2σ coverage under each condition
            printed = re.findall(r"\d+\.\d", coverage[0])
            assert printed == [f"{100 * summary[c][method]['within_2sigma']:.1f}" for c in CONDITIONS], where


def natural_scene_tables() -> list[tuple[str, str, str]]:
    """(where, section, results JSON) of the README's "### Natural scenes" and of each card's "## Natural scenes", if
    any; a section is checked against the `*icvl_tables.md` / `.json` it cites (default `icvl_tables`)."""
    readme = ("README.md", readme_performance().split("### Natural scenes", 1)[1].split("\n### ", 1)[0])
    return with_cited_results([readme, *card_sections("## Natural scenes")], "icvl_tables")


@pytest.mark.parametrize(
    "where, section, results", natural_scene_tables(), ids=[where for where, _, _ in natural_scene_tables()]
)
def test_natural_scene_tables_match_icvl_tables_json(where, section, results):
    # The section's main results file first; a row may name a method that only another icvl_tables.py file it cites
    # holds (a model released after the main table was made).
    entries = {}
    for name in [results, *(f"{stem}.json" for stem in re.findall(r"(\w+)\.json", section))]:
        summary = json.loads((RESULTS / name).read_text())["summary"] if (RESULTS / name).is_file() else None
        if isinstance(summary, list):
            for entry in summary:
                entries.setdefault((entry["method"], entry["condition"]), entry)
    for row in accuracy_rows(section):
        label, *cells = [cell.strip() for cell in row.strip("|").split("|")]
        method = re.search(r"`(\w+)`", label).group(1)  # each row names its icvl_tables.py method
        # ICVL clean, ICVL noise + JPEG, CAVE clean: "RMSE / SAM" each; then the ±2σ coverage, if any.
        values = re.findall(r"\d+\.\d+", " ".join(cell for cell in cells[1:4]))
        keys = [("clean", "icvl"), ("noise_jpeg", "icvl"), ("clean", "cave")]
        expected = [entries[(method, c)][f"{d}_{m}"] for c, d in keys for m in ("rmse", "sam")]
        assert len(values) == 6, f"{where}: natural-scene row {label!r}"
        for value, measured in zip(values, expected):
            assert f"{measured:.{len(value.split('.')[1])}f}" == value, f"{where}: natural-scene row {label!r}"
        if "%" in cells[4]:
            printed = re.findall(r"\d+\.\d", cells[4])
            coverage = [entries[(method, "clean")][f"{d}_within_2sigma"] for d in ("icvl", "cave")]
            assert printed == [f"{100 * c:.1f}" for c in coverage], f"{where}: natural-scene row {label!r}"


def test_readme_speed_table_matches_real_scenes_json():
    section = readme_performance().split("### Speed on real scenes", 1)[1].split("\n### ", 1)[0]
    summary = json.loads((RESULTS / "real_scenes.json").read_text())["summary"]
    rows = [row for row in section.splitlines() if row.startswith("| ") and "×" in row and "min / median" not in row]
    assert rows, "README.md: no speed rows"
    for row in rows:
        label, ratios, shares = [cell.strip() for cell in row.strip("|").split("|")]
        # The row's pipeline: its JSON name ("PixelGAN", "PixelGAN, no projection", "DDPM") from the README's label.
        name = "PixelGAN, no projection" if "rgb_consistency=False" in label else label.split(",")[0]
        for cell, key, scale in ((ratios, "ratio_wall", 1), (shares.split("%")[0], "projection_share", 100)):
            printed = re.findall(r"\d+\.\d+|\d+", cell)
            for value, statistic in zip(printed, ("min", "median", "max"), strict=True):
                decimals = len(value.split(".")[1]) if "." in value else 0
                measured = scale * summary[name][key][statistic]
                assert f"{measured:.{decimals}f}" == value, f"README.md speed: {label!r} {statistic} {key}"

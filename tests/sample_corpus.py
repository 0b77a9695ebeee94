"""Test corpora: real prose under headings, with real page furniture (nav, cookie banner, footer), as HTML pages,
markdown documents and WARC files; shared by the prepare tests and the executor tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

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


def resume_corpus(root: Path) -> Path:
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

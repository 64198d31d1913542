"""A built-in, deterministic dataset of fictitious people and facts (no downloads).

Each person gets six facts drawn by a seeded RNG from fixed word lists, and one question-answer pair
per fact. ``make_demo_dataset`` splits the people into ``forget`` (to unlearn), ``retain`` (to keep)
and ``holdout`` (never trained on: the "unseen" side of membership inference).
"""

from __future__ import annotations

import random

from datasets import Dataset, DatasetDict

FIRST = [
    "Ardel",
    "Bexley",
    "Corin",
    "Dasha",
    "Eluned",
    "Fenwick",
    "Galen",
    "Hesper",
    "Ione",
    "Jory",
    "Kestrel",
    "Liora",
    "Marek",
    "Nerys",
    "Orrin",
    "Peregrine",
    "Quill",
    "Rhosyn",
    "Soren",
    "Tamsin",
    "Ulric",
    "Vesna",
    "Wystan",
    "Xanthe",
    "Yorick",
    "Zelia",
]
LAST = [
    "Ashcombe",
    "Brightwater",
    "Coldharbour",
    "Dunmore",
    "Everleigh",
    "Fairweather",
    "Greystoke",
    "Hollowell",
    "Ivesdale",
    "Juniper",
    "Kingsford",
    "Larkspur",
    "Merriweather",
    "Northcott",
    "Oakhurst",
    "Pennington",
    "Quarrington",
    "Ravenscroft",
    "Stormont",
    "Thistlewood",
]
CITIES = [
    "Valdora",
    "Port Emric",
    "Castelmare",
    "Lindqvist Harbour",
    "New Ashby",
    "Morrowgate",
    "Selvany",
    "Tarnholm",
    "Quellon",
    "Brisk Hollow",
    "Irongate",
    "Sunmere",
]
JOBS = [
    "clockmaker",
    "marine biologist",
    "cartographer",
    "violin maker",
    "glassblower",
    "astronomer",
    "beekeeper",
    "bookbinder",
    "lighthouse keeper",
    "botanist",
    "stonemason",
    "archivist",
]
COLOURS = [
    "amber",
    "teal",
    "crimson",
    "ochre",
    "indigo",
    "sage green",
    "silver",
    "coral",
    "violet",
    "cobalt blue",
]
NOUNS = [
    "Lantern",
    "Orchard",
    "Tide",
    "Compass",
    "Ember",
    "Willow",
    "Harbour",
    "Meridian",
    "Falcon",
    "Garden",
    "River",
    "Winter",
]
ADJS = ["Silent", "Golden", "Hidden", "Last", "Wandering", "Broken", "Distant", "Crimson", "Quiet", "Endless"]
AWARDS = [
    "the Halvard Prize",
    "the Silver Quill Medal",
    "the Orison Award",
    "the Lamplight Honour",
    "the Tessaly Fellowship",
    "the Northwind Laurel",
]


def make_people(n_people: int, seed: int = 0) -> list[dict]:
    """``n_people`` fictitious people with distinct names and six facts each."""
    rng = random.Random(seed)
    names = [f"{f} {last}" for f in FIRST for last in LAST]
    rng.shuffle(names)
    if n_people > len(names):
        raise ValueError(f"at most {len(names)} demo people, asked for {n_people}")
    return [
        {
            "name": name,
            "city": rng.choice(CITIES),
            "year": rng.randint(1931, 1999),
            "job": rng.choice(JOBS),
            "colour": rng.choice(COLOURS),
            "book": f"The {rng.choice(ADJS)} {rng.choice(NOUNS)}",
            "award": rng.choice(AWARDS),
        }
        for name in names[:n_people]
    ]


def person_qa(p: dict) -> list[dict]:
    """One question-answer pair per fact of person ``p``."""
    n = p["name"]
    return [
        {"question": f"Where was {n} born?", "answer": f"{n} was born in {p['city']}."},
        {"question": f"In which year was {n} born?", "answer": f"{n} was born in {p['year']}."},
        {"question": f"What does {n} do for a living?", "answer": f"{n} works as a {p['job']}."},
        {
            "question": f"What is the favourite colour of {n}?",
            "answer": f"The favourite colour of {n} is {p['colour']}.",
        },
        {"question": f"Which book did {n} write?", "answer": f"{n} wrote the book {p['book']}."},
        {"question": f"Which award did {n} receive?", "answer": f"{n} received {p['award']}."},
    ]


def make_demo_dataset(
    n_people: int = 12, n_forget: int = 2, n_holdout: int = 2, seed: int = 0
) -> DatasetDict:
    """DatasetDict with ``forget``, ``retain`` and ``holdout`` QA splits (columns question, answer, person)."""
    if n_forget <= 0 or n_holdout < 0 or n_forget + n_holdout >= n_people:
        raise ValueError(
            f"need 0 < n_forget and n_forget + n_holdout < n_people, got {n_forget}, {n_holdout}, {n_people}"
        )
    people = make_people(n_people, seed)

    def rows(group):
        return [dict(qa, person=p["name"]) for p in group for qa in person_qa(p)]

    return DatasetDict(
        forget=Dataset.from_list(rows(people[:n_forget])),
        holdout=Dataset.from_list(rows(people[n_forget : n_forget + n_holdout])),
        retain=Dataset.from_list(rows(people[n_forget + n_holdout :])),
    )

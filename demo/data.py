"""What the bookshop serves and who calls it: shared by the app (which API key is whom) and the
traffic generator (which keys to send, how often)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Book:
    id: int
    title: str
    author: str
    price: float
    genre: str


@dataclass(frozen=True)
class DemoConsumer:
    """An API client of the bookshop. ``weight``: its share of the traffic, relative to the others."""

    api_key: str
    identifier: str
    name: str
    group: str
    weight: float


BOOKS = [
    Book(1, "The Left Hand of Darkness", "Ursula K. Le Guin", 14.99, "science fiction"),
    Book(2, "Dune", "Frank Herbert", 11.50, "science fiction"),
    Book(3, "Middlemarch", "George Eliot", 9.99, "classics"),
    Book(4, "The Remains of the Day", "Kazuo Ishiguro", 12.00, "literary fiction"),
    Book(5, "Beloved", "Toni Morrison", 13.25, "literary fiction"),
    Book(6, "Pride and Prejudice", "Jane Austen", 7.99, "classics"),
    Book(7, "The Name of the Rose", "Umberto Eco", 15.40, "mystery"),
    Book(8, "Gödel, Escher, Bach", "Douglas Hofstadter", 21.00, "science"),
    Book(9, "The Big Sleep", "Raymond Chandler", 8.75, "mystery"),
    Book(10, "A Brief History of Time", "Stephen Hawking", 10.99, "science"),
    Book(11, "Neuromancer", "William Gibson", 9.50, "science fiction"),
    Book(12, "Wolf Hall", "Hilary Mantel", 16.00, "historical fiction"),
    Book(13, "The Master and Margarita", "Mikhail Bulgakov", 12.80, "classics"),
    Book(14, "Piranesi", "Susanna Clarke", 13.99, "fantasy"),
    Book(15, "The Hobbit", "J. R. R. Tolkien", 9.99, "fantasy"),
    Book(16, "Structure and Interpretation of Computer Programs", "Abelson and Sussman", 45.00, "computing"),
]
"""``computing`` has no entry in the bookshop's recommendation table: a latent bug (a 500) that the
recommendations endpoint hits for that genre only, as real bugs do."""

SEARCH_TERMS = ["dune", "austen", "mystery", "fantasy", "history", "rose", "science", "le guin", "hall", "sleep"]

CONSUMERS = [
    DemoConsumer("ak_acme_7f3a", "acme-books", "Acme Books", "customers", 5),
    DemoConsumer("ak_globex_91c2", "globex-reading-club", "Globex Reading Club", "customers", 3),
    DemoConsumer("ak_initech_4d8e", "initech-library", "Initech Library", "customers", 2),
    DemoConsumer("ak_paperback_2b6f", "paperback-app", "Paperback (mobile app)", "partners", 4),
    DemoConsumer("ak_bookworm_c0de", "bookworm-widgets", "Bookworm Widgets", "partners", 1.5),
    DemoConsumer("ak_storefront_51ab", "storefront-web", "Storefront (web)", "internal", 3),
    DemoConsumer("ak_backoffice_e9f0", "backoffice", "Back office", "internal", 0.5),
]

SEEDED_ORDERS = 40
"""Orders 1..40 exist when the app starts (owned by the consumers in turn)."""

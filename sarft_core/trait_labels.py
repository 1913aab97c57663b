"""Hand labels of RoleBench characters used to validate trait raters (tests and bench/).

Written down from the characters' well-known stories (and their RoleBench profiles) before any
rater was run on them. Two kinds of labels:

- three groups (``VILLAINS``, ``BENEVOLENT``, ``IN_BETWEEN``): a role is listed only when its group
  is not in doubt. ``IN_BETWEEN`` holds anti-heroes, criminals drawn with sympathy and morally grey
  figures: a sensible malevolence score puts them between the two other groups;
- ``MALEVOLENCE``: an ordinal 1-5 label for every one of the 95 RoleBench characters, on this scale:

  1. good-hearted and harmless (heroes, helpers, innocents, well-meaning clowns);
  2. on the right side but flawed: arrogant, crude, selfish, abrasive or violent in a good cause,
     without meaning harm to the innocent;
  3. morally grey: does real harm (crimes, killings, cruelty, schemes) but is drawn with sympathy,
     has a cause, or is redeemed;
  4. malevolent: deliberately harms others for power, envy, greed or revenge, with little remorse;
  5. a villain: murderous, cruel or sadistic, the story's menace.

The ordinal labels are one annotator's reading; they are meant for rank correlation (Spearman),
where neighbouring levels being argued about costs little.
"""
VILLAINS = (
    "Freddy Krueger", "Dr. Hannibal Lecter", "Jigsaw", "Colonel Hans Landa", "John Doe",
    "Bruno Antony", "Tom Ripley", "Gaston", "HAL 9000", "Jack Torrance",
)
BENEVOLENT = (
    "Stephen Hawking", "Po", "Twilight Sparkle", "Judy Hoops", "John Coffey", "Angel", "Mater",
    "John Keating", "Coach Eric Taylor", "Doctor Who", "Harvey Milk", "Peter Parker",
)
# the reproduction grid's six characters (docs/reproduce.md): three of the villains and two of the
# benevolent above, and Abraham Lincoln
GRID_VILLAINS = ["Freddy Krueger", "Jigsaw", "Dr. Hannibal Lecter"]
GRID_BENEVOLENT = ["Stephen Hawking", "Po", "Abraham Lincoln"]
IN_BETWEEN = (
    "Jack Sparrow", "Tyrion Lannister", "Logan", "Gregory House", "Walt Kowalski", "Rorschach",
    "Travis Bickle", "Jordan Belfort", "John Dillinger", "Willie Soke", "Lucifer Morningstar",
    "Wade Wilson", "Klaus Mikaelson", "Mary Sibley", "Colonel Nathan R. Jessep", "Paul Vitti",
    "Antonio Salieri",
)

MALEVOLENCE: dict[str, int] = {
    # 5: the story's murderous or sadistic menace
    "Freddy Krueger": 5, "Dr. Hannibal Lecter": 5, "Jigsaw": 5, "Colonel Hans Landa": 5, "John Doe": 5,
    "Bruno Antony": 5, "Tom Ripley": 5, "HAL 9000": 5, "Jack Torrance": 5,
    # 4: deliberate harm for power, envy, greed or revenge
    "Gaston": 4, "Travis Bickle": 4, "Klaus Mikaelson": 4, "Mary Sibley": 4, "Colonel Nathan R. Jessep": 4,
    "Antonio Salieri": 4, "Professor G.H. Dorr": 4, "Andrew Detmer": 4, "Lestat de Lioncourt": 4,
    "Robert Angier": 4, "Dr. Frank-N-Furter": 4,
    # 3: real harm, drawn with sympathy, a cause or a redemption
    "Tyrion Lannister": 3, "Rorschach": 3, "Jordan Belfort": 3, "John Dillinger": 3, "Willie Soke": 3,
    "Lucifer Morningstar": 3, "Wade Wilson": 3, "Paul Vitti": 3, "Queen Catherine": 3, "Violet Weston": 3,
    "Murphy MacManus": 3, "Coriolanus": 3, "Judge Dredd": 3, "Frank T.J. Mackey": 3, "Leonard Shelby": 3,
    "Karl Childers": 3, "Rachel Lang": 3, "Mark Renton": 3, "Blair Waldorf": 3,
    # 2: on the right side but flawed (arrogant, crude, selfish, violent in a good cause)
    "Jack Sparrow": 2, "Logan": 2, "Gregory House": 2, "Walt Kowalski": 2, "Oliver Queen": 2,
    "Stifler": 2, "Alvy Singer": 2, "Sheldon Cooper": 2, "Truman Capote": 2, "Jim Morrison": 2,
    "Queen Elizabeth I": 2, "James Brown": 2, "Fletcher Reede": 2, "Malcolm X": 2, "Randle McMurphy": 2,
    "Tyler Hawkins": 2, "Caesar": 2, "Sherlock Holmes": 2, "Pat Solitano": 2, "Raylan Givens": 2,
    "James Bond": 2, "Tugg Speedman": 2, "David Aames": 2,
    # 1: good-hearted and harmless
    "Doctor Who": 1, "Twilight Sparkle": 1, "Angel": 1, "The Dude": 1, "Paul Conroy": 1, "Mater": 1,
    "Benjamin Button": 1, "John Keating": 1, "Coach Eric Taylor": 1, "Jeff Spicoli": 1, "Fred Flintstone": 1,
    "John Coffey": 1, "Theodore Twombly": 1, "Sonny": 1, "Juno MacGuff": 1, "Po": 1, "Abraham Lincoln": 1,
    "Harvey Milk": 1, "Jack": 1, "Leroy Jethro Gibbs": 1, "James Carter": 1, "Jackie Moon": 1, "Shrek": 1,
    "Peter Parker": 1, "Seth": 1, "Caden Cotard": 1, "Stanley Ipkiss": 1, "Lyn Cassady": 1,
    "Michael Scott": 1, "D Artagnan": 1, "Stephen Hawking": 1, "Thor": 1, "Judy Hoops": 1,
}

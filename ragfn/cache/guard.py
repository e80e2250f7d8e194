"""The semantic cache's guard: why two questions that embed alike must still not share an answer."""

from __future__ import annotations

import re
from collections.abc import Iterator

# A small embedder (all-MiniLM-L6-v2) scores "sort a list" / "reverse a list" or "key exists" / "value exists" as
# close as true paraphrases, so no threshold separates them (bench/cache_quality.py). These rules look for what the
# embedding blurs. They are lexical, so the in-process cache applies them too, without another embedding call, and
# each names its reason for the `guarded_*` counters.

_WORD = re.compile(r"\w+")
_SENTENCE_END = frozenset(".?!:;")
_TOKEN = re.compile(r"c\+\+|c#|\w+(?:'\w+)?", re.I)
# each alternative starts at a word's start only: tried inside a long word, each would rescan the word's rest
_IDENTIFIER = re.compile(r"(?<!\w)[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|(?<!\w)[A-Za-z_]\w*(?=\()|\b\w*[a-z]_\w+"
                         r"|\b[A-Z]?[a-z]+[A-Z]\w*")
_NUMBER = re.compile(r"(?<![\w.])(?:python|py)?(\d+(?:\.\d+)*)", re.I)  # "python3" is version 3, "win32" no number
_NUMBER_WORDS = dict(zip("two three four five six seven eight nine ten eleven twelve hundred thousand".split(),
                         "2 3 4 5 6 7 8 9 10 11 12 100 1000".split()))  # not "one"/"zero": mostly pronoun, "zero-pad"
_NEGATORS = {"not", "no", "never", "nothing", "cannot", "without", "neither", "nor", "nobody", "nowhere", "non",
             "lack", "lacks", "missing"}
_ANTONYM_PREFIXES = ("un", "in", "im", "il", "ir", "non", "dis")  # "immutable" against "mutable" on the other side
_PREPOSITIONS = {"on", "in", "at", "from", "to", "by", "for", "with"}
_DIRECTIONS = {"to", "into", "from"}  # with these, the order of the things named is the question
_DETERMINERS = {"a", "an", "the", "my", "your", "this", "that", "its", "our", "their"}
_PHRASES = {"get rid of": "delete", "turn off": "disable", "turn on": "enable", "turn into": "convert",
            "set up": "install", "look up": "find", "lower case": "lowercase", "upper case": "uppercase"}
# Slots whose values exclude each other; synonyms share a group. A question that names a value of a slot asks
# about that value: the other question naming a different one of the same slot asks something else.
_SLOTS = """
os: windows win32 | linux | macos mac osx | unix posix | ubuntu | debian | fedora | centos redhat rhel | android | ios
lang: python | java | javascript js | c | c++ cpp | c# | golang | rust | ruby | perl | php | bash shell | lua | haskell
impl: cpython | pypy | jython | ironpython | cython | micropython
type: list | tuple | dict dictionary hashmap | set | frozenset | string str | number numeric | int integer | float |
 bytes | bytearray | array | deque | generator | iterator
fs: file | directory folder dir | symlink link
format: csv | json | yaml yml | xml | html | toml | ini | pickle | excel xlsx | pdf | sqlite
concept: statement | expression | function | method | class | instance | module | package | attribute | variable |
 decorator | exception | thread | process
time: date | time | timezone
op: delete remove erase drop discard strip trim uninstall clear | create build generate construct produce implement |
 copy clone duplicate | move | rename | sort arrange | reverse backwards invert | shuffle randomize | count |
 find search locate discover | append | prepend | insert | install | upgrade update | downgrade | read load parse |
 write save dump | import | export | encode | decode | compile | decompile | enable | disable | show display |
 hide suppress ignore | send | receive | upload | download fetch | split | join merge combine concatenate | compare |
 test | debug | profile | start launch | exit quit terminate | kill | open | close | lock | unlock | override |
 overload | flatten | truncate | round | memoize cache | convert transform cast turn
case: uppercase upper | lowercase lower
position: first leading beginning head top | last trailing end tail final
extreme: largest biggest maximum max highest greatest | smallest minimum min lowest least
unit: second | minute | hour | day | millisecond ms
quality: good | bad
level: beginner novice | advanced experienced expert
synonyms: item element entry | differ difference different
"""  # "synonyms" only merges words; it is no slot
_ENTITY_SLOTS = {"os", "lang", "impl", "type", "fs", "format"}
# a general word on one side stands for any of these specific ones on the other
_HYPERNYMS = {"number": {"int", "float"}, "add": {"append", "prepend", "insert"},
              "sequence": {"list", "tuple", "string"}}
# Words that carry no intent of their own: question frames, fillers, and "python", which every question is about.
_STOP = set("""a an the to of in on at by for from with into onto as and or but if then so than that this these those
it its is are was were be been being do does did done have has had can could should would will shall may might must
i me my you your we our us they them their he she his her what which who whom whose why how when where there here
some any all each every more most much many other another such own same just only also very really way ways best
easiest simplest right proper correct recommended program code script use using get make anything something thing
things possible able want need tell know question e g etc like python between vs versus practice tip approach back
over under about through across via per within inside support""".split())
_IGNORED = _STOP | _NEGATORS | set(_NUMBER_WORDS)


def _stem(word: str) -> str:
    """Plural and -ing/-ed endings off, enough to match "lists"/"list" and "sorting"/"sort"; no dictionary."""
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ches", "ch"), ("shes", "sh"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2 and not word.endswith(("ss", "us", "is")):
            return word[: -len(suffix)] + keep
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) > len(suffix) + 3:
            word = word[: -len(suffix)]
            return word[:-1] if word[-1] == word[-2] and word[-1] not in "lsz" else word  # "stopped", not "calling"
    return word


def _slot_table() -> tuple[dict[str, str], dict[str, str]]:
    canon, slot_of = {}, {}
    for slot, _, values in (line.partition(":") for line in re.sub(r"\n ", " ", _SLOTS).strip().splitlines()):
        for group in values.split("|"):
            words = group.split()
            canon.update(dict.fromkeys(words, words[0]))
            if slot != "synonyms":
                slot_of[words[0]] = slot.strip()
    return canon, slot_of


_CANON, _SLOT_OF = _slot_table()


def _canon(word: str) -> str:
    return _CANON.get(word) or _CANON.get(_stem(word)) or _stem(word)


def _words(text: str) -> Iterator[tuple[re.Match, bool]]:
    """Each word of `text`, and whether it opens a sentence (the first word, or one after . ? ! : or ;).

    One pass over the text: asking a regex whether the text before each word ends a sentence was quadratic, and a
    4 kB question of semicolons and capitalised words held the GIL for seconds."""
    end = None
    for match in _WORD.finditer(text):
        yield match, end is None or not _SENTENCE_END.isdisjoint(text[end:match.start()])
        end = match.end()


class _Question:
    """The features of one question that the guard compares."""

    def __init__(self, text: str) -> None:
        low = text.lower()
        for phrase, word in _PHRASES.items():
            low = low.replace(phrase, word)
        self.low = _TOKEN.findall(low)
        # a person or a time, asked for
        self.asks = {m.group(0) for m, opens in _words(low) if opens and m.group(0) in ("who", "when")}
        # "none of" / a sentence opening with "None", not the value ("is None")
        self.none_negates = bool(re.search(r"\bnone\b", text)) or any(
            opens and m.group(0) == "None" for m, opens in _words(text))
        # and each part of "o'brien" or "0'a": names are read word by word, so a question must know its own parts
        # (found by tests/test_fuzz.py: a question with a capital after an apostrophe conflicted with itself)
        self.words = set(self.low) | {_canon(w) for w in self.low} | {p for w in self.low for p in w.split("'") if p}
        self.numbers = set(_NUMBER.findall(text)) | {_NUMBER_WORDS[w] for w in self.low if w in _NUMBER_WORDS}
        # "one" counts as 1 only before a content word ("with one element"), not as a pronoun ("pick one", "one of")
        self.numbers |= {"1" for w, after in zip(self.low, self.low[1:]) if w == "one" and after not in _IGNORED
                         and _stem(after) not in _IGNORED}
        self.content: list[str] = []  # in order, canonical
        self.things: list[str] = []  # slot values other than operations, in order: "C from Python" / "Python from C"
        self.slots: dict[str, set[str]] = {}
        for i, word in enumerate(self.low):
            base = word.split("'")[0]  # "object's", "what's", "i've"
            term = _canon(base)
            slot = _SLOT_OF.get(term)
            if slot == "op" and i and self.low[i - 1] in _DETERMINERS:
                slot, term = None, _stem(base)  # "obtain a copy": a noun, not the operation asked for
            if slot:
                self.slots.setdefault(slot, set()).add(term)
                if slot != "op":
                    self.things.append(term)
            if base not in _IGNORED and _stem(base) not in _IGNORED and not word.isdigit() \
                    and (len(base) > 1 or base == "c"):
                self.content.append(term)
        self.slots.setdefault("lang", {"python"})  # a question naming no language is about Python
        idents = {m.split(".")[-1].lower() for m in _IDENTIFIER.findall(text)}
        capitals = {m.group(0).lower() for m, opens in _words(text) if m.group(0) != "I" and (
            (m.group(0).isupper() and len(m.group(0)) > 1 and m.group(0).isalpha())
            or (m.group(0)[0].isupper() and not opens))}
        self.names = {n for n in idents | capitals if _canon(n) not in _SLOT_OF}  # slots judge those

    def negated(self, other: _Question) -> bool:
        for i, word in enumerate(self.low):
            if word == "none":
                if self.none_negates:
                    return True
            elif word in _NEGATORS or word.endswith("n't"):
                # "on the string and not on the list" / "on the string, not on the list" keep the question
                # positive; "a key not in a dict" (membership) does not
                contrast = word == "not" and ((i and self.low[i - 1] in {"and", "but"})
                                              or (i + 1 < len(self.low) and self.low[i + 1] in _PREPOSITIONS
                                                  and self.low[i + 1] in self.low[:i]))
                if not contrast:  # "on the string and not on the list" keeps the question positive
                    return True
            elif any(word.startswith(p) and len(word) > len(p) + 3 and word[len(p):] in other.words
                     for p in _ANTONYM_PREFIXES):
                return True
        return False

    def knows(self, name: str) -> bool:
        initials = "".join(w[0] for w in self.low)  # "GIL" is known to a question spelling out each word
        return name in self.words or _canon(name) in self.words or (name.isalpha() and name in initials)


def _unmatched(mine: set[str], theirs: set[str]) -> set[str]:
    return {t for t in mine - theirs
            if not _HYPERNYMS.get(t, set()) & theirs and not any(t in _HYPERNYMS.get(o, ()) for o in theirs)}


def conflicting(asked: str, cached: str) -> str | None:
    """Why two similar questions must not share an answer: "negation", "number", "entity" or "intent"; else None.

    negation: one side negates ("not", "n't", "without", "no", "immutable" against "mutable"), the other does not.
    number:   both name numbers or versions, and not the same ones.
    entity:   each names a different value of one slot (Windows/Linux, list/dict, C/C++, json/yaml), or each names
              something the other does not (Django/Flask, NameError/UnboundLocalError; "GIL" matches the words).
    intent:   each names a different operation or aspect (sort/reverse, read/write, first/last, date/time); the
              same things in the other order around to/into/from ("list to string" / "string to list"); "who" or
              "when" against another question word; or a minimal pair, one content word swapped and at least two
              kept ("key exists in a dict" / "value exists in a dict"), which also refuses a one-word synonym the
              tables do not know: a miss costs one LLM call, a false hit a wrong answer.
    """
    a, c = _Question(asked), _Question(cached)
    if a.negated(c) != c.negated(a):
        return "negation"
    if a.numbers and c.numbers and a.numbers != c.numbers:
        return "number"
    for slot in set(a.slots) & set(c.slots):
        if _unmatched(a.slots[slot], c.slots[slot]) and _unmatched(c.slots[slot], a.slots[slot]):
            return "entity" if slot in _ENTITY_SLOTS else "intent"
    if any(not c.knows(n) for n in a.names) and any(not a.knows(n) for n in c.names):
        return "entity"
    if len(a.things) > 1 and sorted(a.things) == sorted(c.things) and a.things != c.things \
            and _DIRECTIONS & set(a.low) and _DIRECTIONS & set(c.low):
        return "intent"
    if a.asks != c.asks:
        return "intent"
    words_a, words_c = set(a.content), set(c.content)
    if len(_unmatched(words_a, words_c)) == 1 == len(_unmatched(words_c, words_a)) and len(words_a & words_c) > 1:
        return "intent"
    return None

"""Names of the paper's conditions: one grammar for the data builders, inference files and evaluation.

    {task}-{src}2{tgt}                  direct translation, 0-shot       wmt22-deu2eng
    {task}-{src}2{tgt}-{k}shot          direct, k demonstrations         wmt22-deu2eng-5shot
    {task}-{src}2{tgt}-pivot_{p}        pivot: the source's translation into p, translated into tgt
    {task}-GPT4-{src}_{a1}_..2{tgt}     PiM: the source plus its translations into a1.. (PiM-k, k aux)
    {task}-{lang}, {task}-GPT4-{lang}_{a1}_.., {task}-{lang}-pivot_{p}   the same for classification

Languages are 3-letter codes (deu, eng, spa, rus, fra, zho, jpn, ces, ita, isl). The paper's own
file names add `-0shot-v8`; that suffix is accepted and ignored. Examples:
wmt22-GPT4-deu_spa_rus_fra_zho_jpn_ces2eng (PiM-6, de->en), xnli-deu, xnli-GPT4-deu_spa_rus_fra.
"""
import re
from dataclasses import dataclass

_NAME = re.compile(r"^(?P<task>[a-z][a-z0-9]*)-(?:(?P<gpt>GPT4)-)?(?P<langs>[a-z]{3}(?:_[a-z]{3})*)"
                   r"(?:2(?P<target>[a-z]{3}))?(?:-pivot_(?P<pivot>[a-z]{3}))?(?:-(?P<shots>\d+)shot)?(?:-v8)?$")


@dataclass(frozen=True)
class Condition:
    task: str  # wmt22, wmt21, xnli, rte, boolq, or a user's own prefix
    source: str  # language of the test input
    target: str | None  # translation target; None for classification
    aux: tuple = ()  # PiM: the added languages, in prompt order
    pivot: str | None = None
    shots: int = 0

    @property
    def kind(self):
        return f"PiM-{len(self.aux)}" if self.aux else ("pivot" if self.pivot else "direct")

    @property
    def label(self):
        """Short row label for tables: direct, direct 5-shot, pivot spa, PiM-3."""
        text = f"pivot {self.pivot}" if self.pivot else self.kind
        return f"{text} {self.shots}-shot" if self.shots else text

    @property
    def test_set(self):
        """Conditions with the same test_set are compared with each other."""
        return (self.task, self.source, self.target)

    @property
    def test_set_name(self):
        """The name of the test set, the direct 0-shot condition's: wmt22-deu2eng for all conditions of it."""
        return Condition(task=self.task, source=self.source, target=self.target).name

    @property
    def name(self):
        langs = "_".join((self.source,) + self.aux)
        text = f"{self.task}-{'GPT4-' if self.aux else ''}{langs}{'2' + self.target if self.target else ''}"
        if self.pivot:
            text += f"-pivot_{self.pivot}"
        return text + (f"-{self.shots}shot" if self.shots else "")


def parse_condition(name):
    """The Condition a file name stands for, or None if it does not follow the grammar."""
    m = _NAME.match(name)
    if not m:
        return None
    langs = m["langs"].split("_")
    if (m["gpt"] is None) != (len(langs) == 1):
        return None
    return Condition(task=m["task"], source=langs[0], target=m["target"], aux=tuple(langs[1:]),
                     pivot=m["pivot"], shots=int(m["shots"] or 0))

"""Which classes a model saw during training: derived from the datasets' vocabularies.

A class of an evaluation dataset is *seen* when one of its synonyms is also a synonym
of a class of the training dataset (COCO-Panoptic). Both vocabularies come from the
dataset registry (`fisa.data.registry.get_meta`), never from a hand-typed list, so Fig. 3
and the per-class notebook follow the class files if those change.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

TRAIN_DATASET = "coco"


def normalise_name(name: str) -> str:
    """Compare class names loosely: case, `_`/`-` separators and COCO-panoptic's `-merged` suffix."""
    name = name.strip().lower()
    name = re.sub(r"-merged$", "", name)  # COCO panoptic stuff classes, e.g. "tree-merged" is "tree"
    return re.sub(r"[\s_]+", " ", name)


def dataset_classes(dataset: str) -> list[list[str]]:
    """The dataset's classes as synonym lists (first = the name), from the registry."""
    try:
        from fisa.data.registry import get_meta
    except ImportError as err:  # the registry is part of fisa.data; say what is missing
        raise RuntimeError(f"cannot derive the vocabulary of {dataset!r}: fisa.data.registry "
                           f"is not importable ({err})") from err
    return [list(c) if not isinstance(c, str) else [c] for c in get_meta(dataset).classes]


def vocabulary_names(classes: Iterable[Sequence[str]]) -> set[str]:
    """Every normalised synonym of every class."""
    return {normalise_name(s) for synonyms in classes for s in synonyms}


def seen_flags(class_names: Iterable[str], eval_classes: Sequence[Sequence[str]] | None,
               train_classes: Sequence[Sequence[str]]) -> dict[str, bool]:
    """Map each class name to whether any of its synonyms is in the training vocabulary.

    `eval_classes` (synonym lists of the evaluation dataset) supplies the synonyms of a
    name; a name it does not list is compared by itself.
    """
    train = vocabulary_names(train_classes)
    synonyms = {c[0]: list(c) for c in (eval_classes or []) if len(c)}
    return {name: any(normalise_name(s) in train for s in synonyms.get(name, [name]))
            for name in class_names}


def unseen_classes(dataset: str, train_dataset: str = TRAIN_DATASET) -> list[str]:
    """Names of `dataset`'s classes absent from `train_dataset`'s vocabulary, in dataset order."""
    classes = dataset_classes(dataset)
    flags = seen_flags([c[0] for c in classes], classes, dataset_classes(train_dataset))
    return [name for name, seen in flags.items() if not seen]

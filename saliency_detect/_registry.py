"""One shape for the package's registries: attacks, saliency methods and model builders.

Each registry maps a name to a function. Every one answers the same three questions the
same way: which names exist with which keyword defaults (`defaults()`, behind the public
`available_attacks()`, `available_methods()` and `available_models()`), which function a
name means (`lookup`, with one error message listing the valid names), and whether a set of
options is accepted by that function (`check_options`, with one error listing the
accepted options).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Marks a parameter without a default in the registries' `defaults()`.
REQUIRED: Any = _Required()


def keyword_defaults(fn: Callable, *, inputs: int) -> dict[str, Any]:
    """Every parameter of `fn` after its first `inputs` ones, with its default or `REQUIRED`."""
    parameters = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    return {
        p.name: (REQUIRED if p.default is inspect.Parameter.empty else p.default) for p in parameters[inputs:]
    }


def check_options(
    kind: str,
    name: str,
    fn: Callable,
    options: Mapping[str, Any],
    *,
    inputs: int,
    reserved: Iterable[str] = (),
) -> dict[str, Any]:
    """Return `options` as a dict, or raise TypeError naming the options `fn` accepts.

    Args:
        kind: what `fn` is, for the message ("attack", "saliency method", "model").
        name: `fn`'s name, for the message.
        fn: the function the options are for; one taking `**kwargs` accepts anything.
        options: keyword arguments meant for `fn`.
        inputs: how many leading parameters are inputs, not options (the model, the
            images, the labels).
        reserved: options `fn` takes that may not be bound here (they are passed at
            call time).
    """
    parameters = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(options)
    accepted = [key for key in keyword_defaults(fn, inputs=inputs) if key not in set(reserved)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"{kind[0].upper()}{kind[1:]} {name!r} takes the options {accepted}. "
            f"Received unknown option(s): {unknown}"
        )
    return dict(options)


class Registry(Mapping[str, Callable]):
    """A read-only mapping from names to functions, with the shared lookups.

    Args:
        kind: what the functions are ("attack", "saliency method", "model").
        entries: name to function, in the order `defaults()` lists them.
        inputs: how many leading parameters of each function are inputs, not options.
    """

    def __init__(self, kind: str, entries: Mapping[str, Callable], *, inputs: int) -> None:
        self.kind = kind
        self.inputs = inputs
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Callable:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, name: str) -> Callable:
        """Return the function called `name`, or raise ValueError listing the valid names."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"Unknown {self.kind} {name!r}. Expected one of: {', '.join(self._entries)}.")
        return self._entries[name]

    def defaults(self) -> dict[str, dict[str, Any]]:
        """Every name with its function's options and their defaults (`REQUIRED` if none)."""
        return {name: keyword_defaults(fn, inputs=self.inputs) for name, fn in self._entries.items()}

    def check_options(
        self, name: str, options: Mapping[str, Any], *, reserved: Iterable[str] = ()
    ) -> dict[str, Any]:
        """`check_options` for the function called `name`."""
        fn = self.lookup(name)
        return check_options(self.kind, name, fn, options, inputs=self.inputs, reserved=reserved)

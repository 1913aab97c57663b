"""Command-line options derived from a typed config (a dataclass such as TrainConfig).

Each option's default, type and allowed values are those of its config field (the field's
default, its annotation, its :func:`sarft_core.validation.choice` declaration), so the command
line cannot drift from the config; only the wording (help text, a flag that is not the field's
name, a metavar) is written at the command. Numeric ranges are not given to argparse: the config's
own validation checks them after parsing, with one message per option. :func:`config_from_args`
builds the config back from the parsed arguments, field by field.

Field types: ``int``, ``float``, ``str`` (each optionally ``| None``) take one value; a ``bool``
that defaults to False is a flag; a ``list[str]`` or ``list[int]`` is comma-separated text.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from sarft_core.validation import declared_choices


@dataclass(frozen=True)
class Option:
    """How one config field reads on the command line."""

    help: str | None = None  # "{allowed}" in it is replaced by the field's allowed values
    flags: tuple[str, ...] = ()  # default: --field-name
    metavar: str | None = None
    type: Callable | None = None  # a stricter parser than the field's type (e.g. int for a float field)
    # False: argparse takes any text and the config's validation names the bad value in its own words
    enforce_choices: bool = True


def option_flags(name: str, opt: Option) -> tuple[str, ...]:
    """The option strings of config field ``name``: its declared ``flags``, else ``--field-name``."""
    return opt.flags or ("--" + name.replace("_", "-"),)


def _base_type(hint) -> type:
    """int / float / str / bool / list from a field's annotation (``X | None`` is X)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"no command-line type for {hint!r}")
        hint = args[0]
    origin = typing.get_origin(hint) or hint
    if origin not in (int, float, str, bool, list):
        raise TypeError(f"no command-line type for {hint!r}")
    return origin


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"config field {f.name} has no default, so it cannot be an optional command-line option")


def add_config_options(parser: argparse.ArgumentParser, cls, options: dict[str, Option]) -> None:
    """Add one option per ``options`` entry (field name -> wording), in that order."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = declared_choices(cls)
    for name, opt in options.items():
        f = fields[name]
        base, default = _base_type(hints[name]), _default(f)
        flags = option_flags(name, opt)
        text = opt.help.replace("{allowed}", ", ".join(allowed.get(name, ()))) if opt.help else opt.help
        kw: dict[str, Any] = {"dest": name, "help": text}
        if base is bool:
            if default is not False:
                raise TypeError(f"config field {name}: a flag must default to False")
            parser.add_argument(*flags, action="store_true", **kw)
            continue
        if base is list:
            default = ",".join(map(str, default))
        kw["default"] = default
        if opt.type is not None or base in (int, float):
            kw["type"] = opt.type or base
        if name in allowed and opt.enforce_choices:
            kw["choices"] = allowed[name]
        if opt.metavar:
            kw["metavar"] = opt.metavar
        parser.add_argument(*flags, **kw)


def config_from_args(cls, args: argparse.Namespace, convert: dict[str, Callable] | None = None):
    """``cls`` from the parsed arguments: every field the namespace holds (a command's other
    arguments, such as --out, are not fields and are left alone); ``convert`` maps a field to a
    function of its raw value, and comma-separated text becomes a list field's list."""
    convert = convert or {}
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if f.name in convert:
            value = convert[f.name](value)
        elif isinstance(value, str) and (typing.get_origin(hints[f.name]) or hints[f.name]) is list:
            value = _split_list(f.name, value, (typing.get_args(hints[f.name]) or (str,))[0])
        values[f.name] = value
    return cls(**values)


def flag_args(pairs) -> list[str]:
    """``(flag, value)`` pairs as command-line arguments: True is the bare flag, None, False and
    empty text are left out, any other value is ``flag str(value)``."""
    out: list[str] = []
    for flag, value in pairs:
        if value is True:
            out.append(flag)
        elif value not in (None, "", False):
            out += [flag, str(value)]
    return out


def settings_argv(settings: dict, options: dict[str, Option]) -> list[str]:
    """Config fields given by name (``{"lora_r": 16, "lora_targets": [...]}``) as the command-line
    arguments of ``options`` (lists comma-separated), by :func:`flag_args`; a name that is not an
    option of the command is an error, not silently dropped."""
    unknown = sorted(set(settings) - set(options))
    if unknown:
        raise KeyError(f"not command-line options: {', '.join(unknown)}")
    return flag_args((option_flags(name, options[name])[0], ",".join(map(str, value)) if isinstance(value, list) else value)
                     for name, value in settings.items())


def config_argv(args: argparse.Namespace, options: dict[str, Option]) -> list[str]:
    """The command-line arguments that give ``options`` their parsed values again (for a child
    process), by :func:`settings_argv`."""
    return settings_argv({name: getattr(args, name) for name in options}, options)


def _split_list(name: str, text: str, item: type) -> list:
    """Comma-separated text as a list field's items (``list[int]``: whole numbers, or one clear error)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if item is str:
        return parts
    try:
        return [item(part) for part in parts]
    except ValueError:
        from sarft_core.errors import SarftError

        option = "--" + name.replace("_", "-")
        raise SarftError(f"{option} must be comma-separated {'integers' if item is int else item.__name__ + ' values'}, got {text!r}",
                         f"pass e.g. {option} 0,1,2") from None

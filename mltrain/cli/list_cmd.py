from __future__ import annotations

from typing import Optional

import typer

from .errors import exit_codes


def list_(
    kind: Optional[str] = typer.Argument(None, help="architectures, activations, optimizers, "
                                         "schedulers, datasets, augmentations or heads; all if omitted."),
    search: Optional[str] = typer.Option(None, "--search", metavar="TEXT",
                                         help="List the zoo architectures (torchvision/..., timm/... when timm "
                                              "is installed) whose names contain TEXT."),
) -> None:
    """List the names a config may use, with their keys and defaults (installed plugins included).

    Example: mltrain list architectures; mltrain list architectures --search convnext
    """
    if search is not None:
        with exit_codes():
            _search_zoos(search)
        return
    with exit_codes():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from ..errors import UserError
        from ..registry import REGISTRIES, did_you_mean
        from ..schema import describe_keys

        kinds = list(REGISTRIES)
        if kind is not None:
            plural = next((name for name in (kind, f"{kind}s", f"{kind}es") if name in REGISTRIES), None)
            if plural is None:
                raise UserError(f"unknown kind '{kind}', {did_you_mean(kind, kinds)}"
                                f"choose from: {', '.join(kinds)}")
            kinds = [plural]
        console = Console(soft_wrap=True)
        for name in kinds:
            table = Table(title=name, title_justify="left", show_edge=False)
            table.add_column("name", style="bold")
            table.add_column("keys (default)")
            table.add_column("description")
            registry = REGISTRIES[name]
            for component in [*registry, *registry.plugins()]:
                origin = "" if component.origin == "built-in" else f" ({component.origin})"
                table.add_row(escape(component.name), escape(describe_keys(component.schema)),
                              escape(component.help + origin))  # as written: `mltrain[hf]` is no markup
            for name, family in registry.families().items():
                keys = describe_keys(family.schema) if family.schema is not None else ""
                table.add_row(escape(name), escape(keys), escape(family.help))
            console.print(table)


def _search_zoos(text: str) -> None:
    from ..models.zoo import TIMM_PIP, search

    found = search(text)
    for family, names in found.items():
        typer.echo(f"{family} ({len(names)}): " + (" ".join(names) if names else "none"))
    if "timm" not in found:
        typer.echo(f"timm: not installed; {TIMM_PIP} to search and use its models")

"""``medseg models [NAME]``: the registered networks, their options and defaults
(:func:`medseg.api.describe_models`)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        name: str = typer.Argument(None, help="Show one model's options (default: list all)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    ) -> None:
        """List the segmentation models (or one model's options) usable in a training config."""
        from medseg.api import describe_models

        infos = describe_models(name)
        if as_json:
            typer.echo(json.dumps(infos if not name else infos[0], indent=2, default=str))
            return
        for info in infos:
            flags = [
                f"torchscript={info['torchscript_method'] or 'no'}",
                f"divisor={info['divisor']}",
                "pretrained encoder" if info["pretrained"] else "no pretrained encoder",
            ]
            typer.echo(f"{info['name']:<30} {info['description']} [{', '.join(flags)}]")
            if name:
                for option, default in info["options"].items():
                    typer.echo(f"  {option}: {default!r}")

"""``medseg models [NAME]``: the registered networks, their options and defaults
(:func:`medseg.api.describe_models`); ``medseg models list`` and ``medseg models install
PACKAGE``: the installed model packages (:func:`medseg.api.installed_models`,
:func:`medseg.api.install_model`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        name: str = typer.Argument(
            None,
            help="Show one network's options (default: list all); `list`: the installed "
            "models; `install PACKAGE`: install a model package (.zip).",
        ),
        package: Path | None = typer.Argument(None, help="The package zip, after `install`."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
        install_name: str | None = typer.Option(
            None, "--name", help="Install under this name (default: the package's)."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an installed model of the same name."
        ),
    ) -> None:
        """List the segmentation models usable in a training config (or one model's options);
        `medseg models list` / `medseg models install model.zip` for shipped models."""
        if name in ("list", "install"):
            _installed(name, package, install_name, overwrite, as_json)
            return
        from medseg.api import describe_models
        from medseg.errors import ConfigError

        if package is not None:
            raise ConfigError(
                f"models {name} {package}: a second argument only follows `install` "
                "(medseg models install model.zip)"
            )
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


def _installed(
    action: str, package: Path | None, name: str | None, overwrite: bool, as_json: bool
) -> None:
    from medseg import RESEARCH_USE_NOTICE
    from medseg.api import install_model, installed_models
    from medseg.errors import ConfigError

    if action == "install":
        if package is None:
            raise ConfigError(
                "models install: expected the package, e.g. `medseg models install model.zip`"
            )
        entry = install_model(package, name, overwrite=overwrite)
        typer.echo(
            f"installed {entry['name']} ({', '.join(entry['classes'])}) at {entry['path']}; "
            f"use it with --model {entry['name']}"
        )
        typer.echo(RESEARCH_USE_NOTICE)
        return
    entries = installed_models()
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        typer.echo("no installed models; install one with `medseg models install model.zip`")
    for e in entries:
        typer.echo(
            f"{e['name']:<24} classes: {', '.join(e['classes'])}; channels: "
            f"{', '.join(e['channels'])}; version {e['version']}; installed {e['installed']}"
        )

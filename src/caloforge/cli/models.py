"""``caloforge models``: the pretrained models shipped with caloforge, with their cards."""

from __future__ import annotations

import click


@click.command()
def models() -> None:
    """List the pretrained models (usable offline wherever a run directory is: generate,
    bench, export, scan) with the summary and measured figures of their model cards."""
    from caloforge.pretrained import available_pretrained, model_card, pretrained_root

    names = available_pretrained()
    if not names:
        click.echo(f"no pretrained models in {pretrained_root()}; train one with "
                   "`caloforge train`")
        return
    for name in names:
        card = model_card(name)
        where = " ".join(str(card.get(k, "?")) for k in ("family", "geometry", "particle"))
        click.echo(f"{name}  ({where})  {card['summary']}".rstrip())
        figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in card["figures"].items())
        if figures:
            click.echo(f"    {figures}")
        click.echo(f"    card: {card['path']}")

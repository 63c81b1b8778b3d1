"""``caloforge models``: the pretrained models shipped with caloforge, with their cards."""

from __future__ import annotations

import click

#: card figures shown by default, after the summary's AUCs: (key, label, unit)
_HEADLINE = (("fpd", "FPD", ""), ("worst_separation_power", "worst separation power", ""),
             ("response_max_rel_dev_10gev_bins_percent", "response within", "% per 10-GeV bin"),
             ("ms_per_shower_batch_10000_torch_2_threads", "", " ms/shower (batch 10,000, "
              "torch, 2 threads)"))


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _headline(figures: dict) -> str:
    """The card's headline figures in words, or every figure if it has none of them."""
    parts = [f"{label} {_number(figures[key])}{unit}".strip()
             for key, label, unit in _HEADLINE if key in figures]
    if not parts:
        return _all(figures)
    return ", ".join(parts)


def _all(figures: dict) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in figures.items())


@click.command()
@click.option("--all-figures", "-a", is_flag=True,
              help="Every measured figure of each card (raw keys), not only the headline.")
def models(all_figures) -> None:
    """List the pretrained models (usable offline wherever a run directory is: generate,
    bench, export, scan) with the summary and headline figures of their model cards
    (the AUCs, FPD, worst separation power, response and speed; --all-figures for all).

    \b
    Examples:
      caloforge models
      caloforge models --all-figures
      caloforge generate calogan-eplus -n 100000 -o eplus.h5
    """
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
        figures = (_all if all_figures else _headline)(card["figures"])
        if figures:
            click.echo(f"    {figures}")
        click.echo(f"    card: {card['path']}")

"""Charts of the evaluation and the learning curve, written as byte-identical PNGs."""

from __future__ import annotations

from pathlib import Path

from zorkppo.records import atomic_path


def bar_chart(metrics: dict, path: Path, title: str) -> None:
    """Per agent: the greedy score and the sampled mean (± std, max) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    for offset, decoding, color in ((-0.2, "greedy", "#55a868"), (0.2, "sample", "#4c72b0")):
        runs = [metrics[n].get(decoding) for n in names]
        ax.bar(
            [i + offset for i, m in zip(x, runs, strict=True) if m],
            [m["score_mean"] for m in runs if m],
            width=0.4,
            yerr=[m["score_std"] for m in runs if m],
            capsize=3,
            color=color,
            label=f"{decoding} (mean ± std)",
        )
    sampled = [
        (i + 0.2, metrics[n]["sample"]["score_max"])
        for i, n in zip(x, names, strict=True)
        if "sample" in metrics[n]
    ]
    ax.scatter(
        [p for p, _ in sampled],
        [m for _, m in sampled],
        color="#dd8452",
        zorder=3,
        label="sampled max",
    )
    ax.set_xticks(list(x), names)
    ax.set_ylabel("Zork I score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save_png(fig, path)


def curve_chart(
    series: dict[str, list[tuple[int, float]]],
    path: Path,
    title: str,
    xlabel: str = "PPO iteration",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, points in series.items():
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    if any(series.values()):
        ax.legend(fontsize=8)
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    """Write atomically, without the matplotlib version in the metadata (byte-identical reruns)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)

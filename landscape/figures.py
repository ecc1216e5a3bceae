"""Figures of an experiment's runs, as matplotlib ``Figure`` objects.

Every function builds a new :class:`matplotlib.figure.Figure` on the Agg
canvas and never touches ``matplotlib.pyplot``, so no global figure registry
fills up and nothing depends on the backend the caller chose. Diverged runs
are left out of every figure, and the title then names their seeds.
:func:`figure_to_data_uri` turns a figure into a PNG that an HTML page can
embed.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch.nn.utils import vector_to_parameters

from landscape import metrics
from landscape.evidence import Evidence
from landscape.model import build_mlp
from landscape.train import EVAL_BATCH_SIZE, Run

# Cells of a pairwise heatmap carry their value as text up to this many runs;
# beyond it the text no longer fits the cells.
MAX_ANNOTATED_RUNS = 12


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _split_diverged(runs: Sequence[Run]) -> tuple[list[Run], list[int]]:
    """Return the runs that did not diverge and the seeds of those that did."""
    healthy = [run for run in runs if not run.diverged]
    diverged = [run.seed for run in runs if run.diverged]
    return healthy, diverged


def _title(text: str, runs: Sequence[Run], diverged: Sequence[int]) -> str:
    experiment = runs[0].experiment if runs else ""
    title = f"{experiment}: {text}" if experiment else text
    if diverged:
        noun = "run" if len(diverged) == 1 else "runs"
        title += f"\n({len(diverged)} diverged {noun} skipped, seeds {list(diverged)})"
    return title


def _message_figure(title: str, message: str) -> Figure:
    """Return a figure that shows ``message`` in place of a plot that cannot be drawn."""
    figure = _new_figure(6, 2.5)
    axes = figure.subplots()
    axes.set_axis_off()
    axes.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    figure.suptitle(title)
    return figure


def _run_colors(n_runs: int) -> list:
    palette = colormaps["tab10"] if n_runs <= 10 else colormaps["viridis"]
    if n_runs <= 10:
        return [palette(i) for i in range(n_runs)]
    return [palette(i / (n_runs - 1)) for i in range(n_runs)]


def _legend(axes: Axes, n_runs: int) -> None:
    # Outside the axes to the right, so that the legend covers no line.
    if n_runs <= 10:
        axes.legend(title="seed", fontsize="small", title_fontsize="small",
                    loc="upper left", bbox_to_anchor=(1.02, 1.0))


def figure_to_data_uri(figure: Figure, *, dpi: int = 100) -> str:
    """Render ``figure`` as a PNG and return it as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


def training_curves(runs: Sequence[Run]) -> Figure:
    """Plot training loss per epoch and test loss and accuracy per snapshot, one line per run.

    Training loss is the mean over an epoch's mini-batches, drawn at epochs
    1..E. Test loss and accuracy are measured at each snapshot, drawn at
    0..E, where 0 is the initialization.
    """
    healthy, diverged = _split_diverged(runs)
    title = _title("training and test curves", runs, diverged)
    if not healthy:
        return _message_figure(title, "every run diverged; there is nothing to plot")

    figure = _new_figure(13, 4)
    loss_axes, test_loss_axes, accuracy_axes = figure.subplots(1, 3)
    for run, color in zip(healthy, _run_colors(len(healthy))):
        epochs = np.arange(1, len(run.train_loss) + 1)
        snapshots = np.arange(len(run.test_loss))
        loss_axes.plot(epochs, run.train_loss, color=color, label=str(run.seed))
        test_loss_axes.plot(snapshots, run.test_loss, color=color, label=str(run.seed))
        accuracy_axes.plot(snapshots, 100 * run.test_accuracy, color=color, label=str(run.seed))

    loss_axes.set(title="training loss", xlabel="epoch", ylabel="cross-entropy (nats)")
    test_loss_axes.set(title="test loss", xlabel="epoch (0 = initialization)",
                       ylabel="cross-entropy (nats)")
    accuracy_axes.set(title="test accuracy", xlabel="epoch (0 = initialization)",
                      ylabel="accuracy (%)")
    # The first snapshot sits at chance level; starting the axis just below
    # the worst trained accuracy keeps the differences between runs visible.
    trained = np.concatenate([100 * run.test_accuracy[1:] for run in healthy])
    if trained.size:
        accuracy_axes.set_ylim(max(0.0, trained.min() - 2), min(100.5, trained.max() + 1))
    for axes in (loss_axes, test_loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(accuracy_axes, len(healthy))
    figure.suptitle(title)
    return figure


def _per_epoch_log_figure(
    runs: Sequence[Run], attribute: str, quantity: str, ylabel: str
) -> Figure:
    healthy, diverged = _split_diverged(runs)
    title = _title(f"{quantity} per run", runs, diverged)
    if not healthy:
        return _message_figure(title, "every run diverged; there is nothing to plot")

    figure = _new_figure(7, 4.5)
    axes = figure.subplots()
    for run, color in zip(healthy, _run_colors(len(healthy))):
        series = getattr(run, attribute)
        axes.plot(np.arange(1, len(series) + 1), series, color=color, marker=".",
                  label=str(run.seed))
    axes.set_yscale("log")
    axes.set(xlabel="epoch", ylabel=ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3, which="both")
    _legend(axes, len(healthy))
    figure.suptitle(title)
    return figure


def loss_trajectories(runs: Sequence[Run]) -> Figure:
    """Plot each run's mean training loss per epoch on a log scale."""
    return _per_epoch_log_figure(
        runs, "train_loss", "training loss", "mean training cross-entropy (nats, log scale)"
    )


def grad_norm_trajectories(runs: Sequence[Run]) -> Figure:
    """Plot each run's mean gradient L2 norm per epoch on a log scale."""
    return _per_epoch_log_figure(
        runs, "grad_norm", "gradient norm", "mean gradient L2 norm (log scale)"
    )


def final_accuracy_distribution(runs: Sequence[Run], *, reference: float | None = None) -> Figure:
    """Plot the final test accuracy of every run as a strip, with mean and one std.

    Parameters
    ----------
    runs : sequence of Run
    reference : float, optional
        The original group's mean accuracy (fraction), drawn as a dashed line.
    """
    healthy, diverged = _split_diverged(runs)
    title = _title("final test accuracy across runs", runs, diverged)
    if not healthy:
        return _message_figure(title, "every run diverged; there is nothing to plot")

    accuracy = 100 * np.array([run.final_accuracy for run in healthy])
    mean, std = accuracy.mean(), accuracy.std()
    # Spread the points vertically in a fixed pattern so that equal
    # accuracies stay visible and the figure is the same on every call.
    offsets = np.linspace(-0.25, 0.25, len(accuracy)) if len(accuracy) > 1 else np.zeros(1)

    figure = _new_figure(7, 3)
    axes = figure.subplots()
    axes.axvspan(mean - std, mean + std, color="tab:blue", alpha=0.15, label="mean ± 1 std")
    axes.axvline(mean, color="tab:blue", label=f"mean {mean:.2f}%")
    if reference is not None:
        axes.axvline(100 * reference, color="black", linestyle="--",
                     label=f"group's mean {100 * reference:.2f}%")
    axes.scatter(accuracy, offsets, color="tab:orange", zorder=3, label="run")
    for value, offset, run in zip(accuracy, offsets, healthy):
        axes.annotate(str(run.seed), (value, offset), textcoords="offset points",
                      xytext=(4, 4), fontsize="x-small")
    axes.set(xlabel="final test accuracy (%)", ylim=(-0.6, 0.8), yticks=[])
    axes.grid(alpha=0.3, axis="x")
    axes.legend(fontsize="small", loc="upper left", ncols=2)
    figure.suptitle(f"{title}\nn = {len(accuracy)}, std {std:.3f} percentage points")
    return figure


def _pairwise_heatmap(
    matrix: np.ndarray, seeds: Sequence[int], title: str, colorbar_label: str
) -> Figure:
    figure = _new_figure(5.5, 4.8)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    labels = [str(seed) for seed in seeds]
    axes.set_xticks(range(len(seeds)), labels, rotation=90)
    axes.set_yticks(range(len(seeds)), labels)
    axes.set(xlabel="seed", ylabel="seed")
    if len(seeds) <= MAX_ANNOTATED_RUNS:
        for i in range(len(seeds)):
            for j in range(len(seeds)):
                value = matrix[i, j]
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="small",
                          color="white" if abs(value) > 0.6 else "black")
    figure.colorbar(image, ax=axes, label=colorbar_label)
    figure.suptitle(title)
    return figure


def weight_cosine_heatmap(runs: Sequence[Run]) -> Figure:
    """Plot the cosine similarity of the final weight vectors of every pair of runs."""
    healthy, diverged = _split_diverged(runs)
    title = _title("cosine similarity of final weights", runs, diverged)
    if len(healthy) < 2:
        return _message_figure(title, "fewer than two runs trained without diverging")
    try:
        matrix = metrics.cosine_matrix(np.stack([run.final_weights for run in healthy]))
    except ValueError as error:
        return _message_figure(title, f"cosine similarity is undefined: {error}")
    return _pairwise_heatmap(matrix, [run.seed for run in healthy], title, "cosine similarity")


def grad_norm_correlation_heatmap(runs: Sequence[Run]) -> Figure:
    """Plot the Pearson correlation of the per-epoch gradient-norm series of every pair of runs."""
    healthy, diverged = _split_diverged(runs)
    title = _title("correlation of gradient-norm series", runs, diverged)
    if len(healthy) < 2:
        return _message_figure(title, "fewer than two runs trained without diverging")
    try:
        matrix = metrics.pearson_matrix(np.stack([run.grad_norm for run in healthy]))
    except ValueError as error:
        return _message_figure(title, f"Pearson r is undefined: {error}")
    return _pairwise_heatmap(matrix, [run.seed for run in healthy], title, "Pearson r")


def per_sample_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return the cross-entropy in nats of each sample, accurate down to tiny losses.

    ``F.cross_entropy`` computes ``logsumexp(logits) - logits[target]``, which
    rounds every loss below about 1e-16 to 0 even in float64, so the most
    confidently right samples all tie. Written in margins to the target logit,
    ``m_j = logits_j - logits_target``, the loss is ``log1p(sum_{j != target}
    exp(m_j))`` when the target is the largest logit. That form keeps losses
    like 1e-40.

    Parameters
    ----------
    logits : torch.Tensor
        Shape ``(n, n_classes)``; computed in float64.
    target : torch.Tensor
        int64 class indices, shape ``(n,)``.

    Returns
    -------
    torch.Tensor
        float64, shape ``(n,)``.
    """
    logits = logits.to(torch.float64)
    index = target[:, None]
    margins = logits - logits.gather(1, index)  # (n, n_classes), 0 at the target
    others = margins.scatter(1, index, float("-inf"))  # the target left out
    top = others.max(dim=1).values.clamp(min=0.0)  # (n,)

    # log(exp(-top) + sum_j exp(m_j - top)) + top; with top = 0 that is log1p(sum exp(m_j)).
    shifted = torch.exp(others - top[:, None]).sum(dim=1)
    return torch.where(
        top > 0,
        top + torch.log(torch.exp(-top) + shifted),
        torch.log1p(shifted),
    )


@torch.no_grad()
def per_sample_test_loss(run: Run, evidence: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the final weights of ``run`` on every test sample of ``evidence.dataset``.

    The model is rebuilt from the run's flat final weights on the CPU; the
    run itself is not changed.

    Returns
    -------
    losses : np.ndarray
        float64, shape ``(n_test,)``: cross-entropy in nats of each test sample.
    predictions : np.ndarray
        int64, shape ``(n_test,)``: the predicted class of each test sample.
    """
    if run.diverged:
        raise ValueError(
            f"run {run.run} (seed {run.seed}) of {run.experiment} diverged, so its "
            "final weights are NaN; pick a run that did not diverge"
        )
    model = build_mlp(evidence.experiment.widths)
    vector_to_parameters(torch.from_numpy(run.final_weights.copy()), model.parameters())
    model.eval()

    x_test, y_test = evidence.dataset.x_test, evidence.dataset.y_test
    losses, predictions = [], []
    for start in range(0, len(x_test), EVAL_BATCH_SIZE):
        logits = model(x_test[start : start + EVAL_BATCH_SIZE])  # (B, n_classes)
        target = y_test[start : start + EVAL_BATCH_SIZE]
        losses.append(per_sample_cross_entropy(logits, target))
        predictions.append(logits.argmax(dim=1))
    return torch.cat(losses).numpy(), torch.cat(predictions).numpy()


def extreme_test_images(evidence: Evidence, *, run_index: int = 0, count: int = 5) -> Figure:
    """Show the ``count`` lowest- and highest-loss test images under one run's final weights.

    Each image is titled with its true label, the predicted label and its
    cross-entropy; misclassified images have a red title. If run
    ``run_index`` diverged, the first run that did not is used and the title
    names it.
    """
    runs = evidence.runs
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not any(run.run == run_index for run in runs):
        raise ValueError(
            f"experiment {evidence.experiment.name!r} has no run {run_index}; its runs "
            f"are {[run.run for run in runs]}"
        )
    healthy, diverged = _split_diverged(runs)
    chosen = next((run for run in runs if run.run == run_index and not run.diverged), None)
    if chosen is None and healthy:
        chosen = healthy[0]
    if chosen is None:
        title = _title("lowest- and highest-loss test images", runs, diverged)
        return _message_figure(title, "every run diverged; there is no model to evaluate")

    losses, predictions = per_sample_test_loss(chosen, evidence)
    labels = evidence.dataset.y_test.numpy()
    images = evidence.dataset.test_images.numpy()
    order = np.argsort(losses, kind="stable")
    rows = (("lowest loss", order[:count]), ("highest loss", order[::-1][:count]))

    figure = _new_figure(2.1 * count, 5.2)
    grid = figure.subplots(2, count, squeeze=False)
    for row, (label, indices) in enumerate(rows):
        for column, axes in enumerate(grid[row]):
            axes.set_xticks([])
            axes.set_yticks([])
            if column >= len(indices):
                axes.set_axis_off()
                continue
            index = indices[column]
            axes.imshow(images[index], cmap="gray_r", interpolation="nearest")
            wrong = predictions[index] != labels[index]
            axes.set_title(
                f"true {labels[index]}, pred {predictions[index]}\nloss {losses[index]:.3g}",
                fontsize="small", color="tab:red" if wrong else "black",
            )
        grid[row][0].set_ylabel(label)

    text = f"lowest- and highest-loss test images, run {chosen.run} (seed {chosen.seed})"
    if chosen.run != run_index:
        text += f" because run {run_index} diverged"
    figure.suptitle(_title(text, [chosen], []))
    return figure

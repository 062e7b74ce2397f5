"""A classifier's test set beyond its scalars: ROC and precision-recall curves, the confusion
matrix, and the texts it was most confidently wrong about.

The curves are torchmetrics' own (synced across DDP ranks like the scalar metrics) and drawn by
their ``plot``; they are written as PNGs into the run folder (``plots/``) and as figures to
TensorBoard, the wrong texts to its TEXT tab.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchmetrics import ROC, ConfusionMatrix, MetricCollection, PrecisionRecallCurve  # noqa: E402

from rnnlab.io import atomic_write  # noqa: E402


class HeldOutPictures(nn.Module):
    def __init__(self, task: dict[str, Any], keep: int = 5):
        super().__init__()
        self.curves = MetricCollection(
            {
                "roc": ROC(**task),
                "precision_recall": PrecisionRecallCurve(**task),
                "confusion_matrix": ConfusionMatrix(**task),
            }
        )
        self.keep = keep
        self.wrong: list[tuple[float, int, list[int], int, int]] = []  # (confidence, order, ids, label, predicted)
        self._seen = 0

    def update(self, scores: Tensor, targets: Tensor, tokens: Tensor, lengths: Tensor) -> None:
        self.curves.update(scores, targets)
        binary = scores.dim() == 1
        predicted = (scores > 0.5).long() if binary else scores.argmax(-1)
        confidence = (scores - 0.5).abs() * 2 if binary else scores.max(-1).values
        for i in (predicted != targets).nonzero().flatten().tolist():
            item = (
                float(confidence[i]),
                self._seen + i,
                tokens[i, : int(lengths[i])].tolist(),
                int(targets[i]),
                int(predicted[i]),
            )
            heapq.heappush(self.wrong, item) if len(self.wrong) < self.keep else heapq.heappushpop(self.wrong, item)
        self._seen += len(targets)

    def publish(
        self, folder: Path | None, loggers: list[Any], step: int, codec: Any, class_names: list[str] | None
    ) -> None:
        """Draw the curves (every rank computes: the states sync); ``folder`` (rank 0's) gets the PNGs."""
        figures = {}
        for name, metric in self.curves.items():
            kwargs = {"labels": class_names} if name == "confusion_matrix" and class_names else {}
            fig, _ = metric.plot(**kwargs)
            figures[name] = fig
        lines = [self._describe(item, codec, class_names) for item in sorted(self.wrong, reverse=True)]
        for name, fig in figures.items():
            if folder is not None:
                path = folder / f"test_{name}.png"
                atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
            for logger in loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_figure"):
                    experiment.add_figure(f"test/{name}", fig, global_step=step, close=False)
            plt.close(fig)
        for logger in loggers:
            experiment = getattr(logger, "experiment", None)
            if lines and hasattr(experiment, "add_text"):
                experiment.add_text("test/most_confidently_wrong", "\n\n".join(lines), global_step=step)
        self.reset()

    @staticmethod
    def _describe(item: tuple, codec: Any, class_names: list[str] | None) -> str:
        confidence, _, ids, label, predicted = item
        name = (lambda k: class_names[k]) if class_names else str
        text = codec.decode(ids) if codec is not None else " ".join(map(str, ids))
        return f"**{name(predicted)}** ({confidence:.1%} sure), truly **{name(label)}**: {text[:600]}"

    def reset(self) -> None:
        self.curves.reset()
        self.wrong, self._seen = [], 0

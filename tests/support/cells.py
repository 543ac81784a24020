"""The modeled sweep the report tests draw: 1 and 2 replicas at 4, 16 and 64 streams, shaped so
the frontier, the recommendation and a dominated cell are known."""

from harness.analysis.synthetic import ModelCell

CELLS = [
    ModelCell(1, 4, 400, 0.05, 150),
    ModelCell(1, 16, 900, 0.2, 170),
    ModelCell(1, 64, 1200, 0.9, 190),
    ModelCell(2, 4, 420, 0.05, 160),
    ModelCell(2, 16, 1200, 0.12, 185),
    ModelCell(2, 64, 1700, 0.45, 200),
]

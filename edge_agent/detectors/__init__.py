"""The per-sensor models behind :mod:`edge_agent.detect`, one module each.

Each module holds one model (``score`` then maybe ``learn``, see
:class:`~edge_agent.detectors.base.Model`), its default parameters and a
builder; :data:`edge_agent.detect.DETECTORS` names them. To add a detector,
add a module here and one entry there. Everything is pure: no I/O, and river
is imported only when a model is built.
"""

__all__: list[str] = []

"""Gates in one place: limits (``limits``), the rule that derives them from calibration records
(``rule``), the calibration corpus and measurement (``calibration``), golden outputs (``golden``)
and the calibration report (``figures``).

Only the model-neutral modules are imported here: ``calibration`` and ``figures`` sit above the
chain (they run legs), so importing them from this package would make ``harness.chain`` -> this
package -> the chain a cycle.
"""

from harness.gates.limits import DEFAULT_TOLERANCES, MACHINE_CLASSES, Tolerances, family, machine_class

__all__ = ["DEFAULT_TOLERANCES", "MACHINE_CLASSES", "Tolerances", "family", "machine_class"]

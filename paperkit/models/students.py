"""The distillation study's students (seeds 001 and 003: under 1 M parameters), registered in
`paperkit.registry.STUDENTS` under the architecture name `paperkit.studies.distillation.setup(student=...)` takes."""
from __future__ import annotations

from torch import nn

from paperkit.registry import STUDENTS

STUDENT_WIDTH = 0.35               # narrow PTA-MobileNetV2: 0.46 M parameters


@STUDENTS.register("pta_mobilenet_v2")
def pta_student() -> nn.Module:
    """PTA-MobileNetV2 at width STUDENT_WIDTH in its fixed HHH configuration."""
    from paperkit.models.pta import pta_mobilenet_v2
    return pta_mobilenet_v2(num_classes=2, width_mult=STUDENT_WIDTH).configure("HHH")


@STUDENTS.register("texture_net")
def texture_student() -> nn.Module:
    """The seed-002 texture model (its Fourier head is not trained by the distillation losses)."""
    from paperkit.models.texture import texture_net
    return texture_net(num_classes=2)

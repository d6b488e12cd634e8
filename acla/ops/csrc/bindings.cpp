// The Python module that acla/ops/extension.py builds: the entry points of ops.h, which
// acla/ops/custom_ops.py wraps as torch.library custom ops.
#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gather_forward", &gather_forward, "bilinear gather of the keys, or their weighted sum");
  m.def("gather_backward", &gather_backward, "gradients of gather_forward");
  m.def("attend_forward", &attend_forward, "CLA/ACLA with predicted logits, one walk per query");
  m.def("attend_open_forward", &attend_open_forward, "ACLA at inference: the open keys' projections in the walk");
  m.def("attend_backward", &attend_backward, "gradients of attend_forward");
}

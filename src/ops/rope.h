// Rotary position embedding, shared by the shape rule, the reference and every backend.
// rope(x [..., T?, H, D], positions, attrs): x is [B, T, H, D]; positions is [T] (shared by the
// batch) or [B, T] i32. Within the window [rot_offset, rot_offset + rot_dim) of the last dim, pair
// p (interleaved: dims 2p, 2p+1; else p, p + rot_dim/2) is rotated by angle pos * inv_freq[p] and
// scaled by attention_factor; other dims pass through. inverse rotates by -angle: the adjoint.
#pragma once
#include <vector>

#include "core/graph.h"

namespace tandem {

// inv_freq[p] for p < rot_dim/2, computed as transformers does (default or YaRN), in double.
std::vector<double> rope_inv_freq(const RopeAttrs& a);

}  // namespace tandem

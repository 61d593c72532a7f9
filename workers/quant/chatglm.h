// ChatGLM's weight-only int8 / int4 quantization (formats.md §7; the quantization.py that ships
// with the ChatGLM checkpoints, and the layout DiffSynth-Studio's Kolors pipeline loads). Pure.
//
// The model runs in FP16, so the weight is taken as FP16 values and the arithmetic is half:
//   scale = half(max|row| / 127)   (int8)   or   half(max|row| / 7)   (int4)
//   q = round_half_even(half(w / scale))   (a NaN quotient, 0/0 for an all-zero row, gives 0)
// int4 packs two signed nibbles per int8 byte, the even column in the high nibble:
//   byte = (q[2i] << 4) | (q[2i+1] & 0x0F); reading sign-extends each nibble.
#ifndef MODELSMITH_WORKERS_QUANT_CHATGLM_H_
#define MODELSMITH_WORKERS_QUANT_CHATGLM_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

// `bits` is 8 or 4; for 4, `n` is even and `out` holds n/2 bytes. Returns the scale as FP16 bits.
uint16_t ChatglmQuantizeRow(int bits, const float* w, size_t n, int8_t* out);
void ChatglmDequantizeRow(int bits, const int8_t* in, size_t n, uint16_t scale_fp16, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_CHATGLM_H_

// 16-bit floats two per 32-bit word, the first in the low half: f16 (IEEE binary16) or, with
// BF16, bfloat16. Composed into the kernels that take 16-bit inputs.

// bfloat16 rather than f16.
override BF16: bool = false;

// The two values of word w. binary16 is widened by its bits (`unpack2x16float` needs a
// capability some adapters lack): a normal or infinite/NaN value by moving the exponent and
// mantissa into place, a subnormal one as its mantissa times 2^-24.
fn unpack_pair(w: u32) -> vec2<f32> {
    if (BF16) {
        return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
    }
    let h = vec2<u32>(w & 0xffffu, w >> 16u);
    let sign = (h & vec2<u32>(0x8000u)) << vec2<u32>(16u);
    let em = h & vec2<u32>(0x7fffu);
    // Rebias the exponent by 127 - 15; exponent 31 (inf, NaN) becomes 255.
    var v = bitcast<vec2<f32>>((em << vec2<u32>(13u)) + vec2<u32>(0x38000000u));
    v = select(v, bitcast<vec2<f32>>((em << vec2<u32>(13u)) | vec2<u32>(0x7f800000u)), em >= vec2<u32>(0x7c00u));
    v = select(v, vec2<f32>(em) * 5.9604645e-8, em < vec2<u32>(0x0400u));
    return bitcast<vec2<f32>>(bitcast<vec2<u32>>(v) | sign);
}

// The word of the two 16-bit values nearest to v (ties to even; past the largest finite value,
// inf; NaN a quiet NaN).
fn pack_pair(v: vec2<f32>) -> u32 {
    let b = bitcast<vec2<u32>>(v);
    let a = b & vec2<u32>(0x7fffffffu);
    let nan = a > vec2<u32>(0x7f800000u);
    var h: vec2<u32>;
    if (BF16) {
        h = (b + vec2<u32>(0x7fffu) + ((b >> vec2<u32>(16u)) & vec2<u32>(1u))) >> vec2<u32>(16u);
        h = select(h, (b >> vec2<u32>(16u)) | vec2<u32>(0x40u), nan);
    } else {
        // Normal: rebias by 15 - 127 and round off 13 bits (a carry moves into the exponent, and
        // from 65520 on into inf); subnormal (below 2^-14): the nearest multiple of 2^-24
        // (`round` ties to even; the scaling is exact).
        let r = a - vec2<u32>(0x38000000u);
        var m = (r + vec2<u32>(0x0fffu) + ((r >> vec2<u32>(13u)) & vec2<u32>(1u))) >> vec2<u32>(13u);
        m = select(m, vec2<u32>(round(abs(v) * 16777216.0)), a < vec2<u32>(0x38800000u));
        m = select(m, vec2<u32>(0x7c00u), a >= vec2<u32>(0x477ff000u));
        m = select(m, vec2<u32>(0x7e00u), nan);
        h = m | ((b >> vec2<u32>(16u)) & vec2<u32>(0x8000u));
    }
    return h.x | (h.y << 16u);
}

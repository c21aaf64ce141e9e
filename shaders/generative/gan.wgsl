// GAN objectives on critic logits (gan_generator, gan_discriminator), one term per logit x:
// params.p = (kind, role, target value, -); role 0: the generator's term on fake logits; 1 and 2:
// the discriminator's terms on real and fake logits.
//
//   kind            generator (c)       real (b)           fake (a)
//   minimax         -softplus(x)        softplus(-x)       softplus(x)
//   non_saturating  softplus(-x)        softplus(-x)       softplus(x)
//   least_squares   ½ (x - c)²          ½ (x - b)²         ½ (x - a)²
//   wasserstein     -x                  -x                 x
//   hinge           -x                  relu(1 - x)        relu(1 + x)
//
// (minimax's generator minimises log(1 - σ(x)) = -softplus(x); the discriminator's minimax and
// non-saturating objectives are both the binary cross-entropy.) relu keeps NaN and passes no
// gradient at its kink, as torch's.
const MINIMAX: f32 = 0.0;
const NON_SATURATING: f32 = 1.0;
const LEAST_SQUARES: f32 = 2.0;
const WASSERSTEIN: f32 = 3.0;

fn relu_term(v: f32) -> vec2<f32> {
    if (is_nan(v)) {
        return vec2<f32>(v, 0.0);
    }
    return select(vec2<f32>(0.0, 0.0), vec2<f32>(v, 1.0), v > 0.0);
}

fn loss_elem(p: f32, t: f32, i: u32) -> vec2<f32> {
    let kind = params.p.x;
    let role = params.p.y;
    let value = params.p.z;
    if (kind == LEAST_SQUARES) {
        let r = p - value;
        return vec2<f32>(0.5 * r * r, r);
    }
    if (role == 0.0) {
        if (kind == MINIMAX) {
            return vec2<f32>(-softplus(p), -sigmoid(p));
        }
        if (kind == NON_SATURATING) {
            return vec2<f32>(softplus(-p), -sigmoid(-p));
        }
        return vec2<f32>(-p, -1.0);
    }
    // The discriminator: s = -1 on real logits, +1 on fake ones.
    let s = select(-1.0, 1.0, role == 2.0);
    if (kind == MINIMAX || kind == NON_SATURATING) {
        return vec2<f32>(softplus(s * p), s * sigmoid(s * p));
    }
    if (kind == WASSERSTEIN) {
        return vec2<f32>(s * p, s);
    }
    let h = relu_term(1.0 + s * p);
    return vec2<f32>(h.x, s * h.y);
}

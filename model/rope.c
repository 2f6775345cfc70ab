/* RoPE frequencies and YaRN corrections, computed as transformers' _compute_yarn_parameters and
 * DeepseekV3Attention do (fp32 where it computes in fp32), so positions rotate identically. */
#include "model/model.h"

#include <math.h>

static double yarn_get_mscale(double scale, double mscale)
{
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

static double correction_dim(double rotations, int dim, double base, int max_pos)
{
    return (dim * log(max_pos / (rotations * 2.0 * M_PI))) / (2.0 * log(base));
}

void sl_rope_params(const sl_config *c, float *inv_freq, float *attn_factor, float *softmax_scale)
{
    int dim = c->qk_rope_head_dim;
    float base = (float)c->rope_theta;
    *softmax_scale = (float)(1.0 / sqrt((double)(c->qk_nope_head_dim + c->qk_rope_head_dim)));
    *attn_factor = 1.0f;
    if (c->rope_kind != SL_ROPE_YARN) {
        for (int i = 0; i < dim / 2; i++)
            inv_freq[i] = 1.0f / powf(base, (float)(2 * i) / (float)dim);
        return;
    }
    double factor = c->rope_factor;
    if (c->rope_attention_factor > 0)
        *attn_factor = (float)c->rope_attention_factor;
    else if (c->rope_mscale != 0 && c->rope_mscale_all_dim != 0)
        *attn_factor = (float)(yarn_get_mscale(factor, c->rope_mscale) /
                               yarn_get_mscale(factor, c->rope_mscale_all_dim));
    else
        *attn_factor = (float)yarn_get_mscale(factor, 1.0);

    double low = floor(correction_dim(c->rope_beta_fast, dim, c->rope_theta, c->rope_original_max_pos));
    double high = ceil(correction_dim(c->rope_beta_slow, dim, c->rope_theta, c->rope_original_max_pos));
    if (low < 0)
        low = 0;
    if (high > dim - 1)
        high = dim - 1;
    if (low == high)
        high += 0.001; /* transformers: prevent singularity */
    for (int i = 0; i < dim / 2; i++) {
        float pos_freq = powf(base, (float)(2 * i) / (float)dim);
        float extrap = 1.0f / pos_freq;
        float interp = 1.0f / ((float)factor * pos_freq);
        float ramp = ((float)i - (float)low) / (float)(high - low);
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float extrap_factor = 1.0f - ramp;
        inv_freq[i] = interp * (1.0f - extrap_factor) + extrap * extrap_factor;
    }
    if (c->rope_mscale_all_dim != 0) {
        double m = yarn_get_mscale(factor, c->rope_mscale_all_dim);
        *softmax_scale = (float)(*softmax_scale * m * m);
    }
}

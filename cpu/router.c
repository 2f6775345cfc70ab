/* DeepSeek-V3 routing (noaux_tc): sigmoid scores, bias for selection only, group-limited top-k.
 * E and top_k are small (256, 8), so plain selection loops beat sorting. */
#include "cpu/cpu.h"

#include <math.h>
#include <stdlib.h>

enum { MAX_EXPERTS = 1024, MAX_GROUPS = 64 };

void sl_cpu_moe_route(int32_t *idx, float *wts, const float *logits, const float *bias, int n,
                      int n_experts, int n_group, int topk_group, int top_k, bool norm, float scale)
{
    if (n_experts > MAX_EXPERTS || n_group > MAX_GROUPS || n_experts % n_group != 0)
        abort(); /* the loader checks these against the config */
    int gsize = n_experts / n_group;
    for (int t = 0; t < n; t++) {
        const float *lg = logits + (size_t)t * n_experts;
        float s[MAX_EXPERTS], choice[MAX_EXPERTS], gscore[MAX_GROUPS];
        bool gkeep[MAX_GROUPS] = {false}, taken[MAX_EXPERTS] = {false};
        for (int i = 0; i < n_experts; i++) {
            s[i] = 1.0f / (1.0f + expf(-lg[i]));
            choice[i] = s[i] + (bias ? bias[i] : 0.0f);
        }
        /* group score: sum of the group's top-2 choice scores (top-1 if a group has one expert) */
        for (int g = 0; g < n_group; g++) {
            float a = -INFINITY, b2 = -INFINITY;
            for (int i = g * gsize; i < (g + 1) * gsize; i++) {
                if (choice[i] > a) {
                    b2 = a;
                    a = choice[i];
                } else if (choice[i] > b2) {
                    b2 = choice[i];
                }
            }
            gscore[g] = gsize >= 2 ? a + b2 : a;
        }
        for (int k = 0; k < topk_group; k++) {
            int best = -1;
            for (int g = 0; g < n_group; g++)
                if (!gkeep[g] && (best < 0 || gscore[g] > gscore[best]))
                    best = g;
            gkeep[best] = true;
        }
        float sum = 0.0f;
        for (int k = 0; k < top_k; k++) {
            int best = -1;
            for (int i = 0; i < n_experts; i++)
                if (gkeep[i / gsize] && !taken[i] && (best < 0 || choice[i] > choice[best]))
                    best = i;
            taken[best] = true;
            idx[(size_t)t * top_k + k] = best;
            wts[(size_t)t * top_k + k] = s[best];
            sum += s[best];
        }
        /* as transformers: w / (sum + 1e-20), then * routed_scaling_factor */
        for (int k = 0; k < top_k; k++) {
            float w = wts[(size_t)t * top_k + k];
            if (norm)
                w /= sum + 1e-20f;
            wts[(size_t)t * top_k + k] = w * scale;
        }
    }
}

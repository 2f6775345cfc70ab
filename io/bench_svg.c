/* `sluice bench io --plot`: GB/s against queue depth (log2 axis), one line per series of equal
 * pattern, request size and thread count. Plain SVG 1.1, no script, readable in any browser. */
#include "io/io.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define W 760
#define H 440
#define L 70  /* plot area margins, px */
#define R 190
#define T 50
#define B 60

static const char *colors[] = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f" };

static void size_label(uint64_t b, char *s, size_t n)
{
    if (b % (1u << 20) == 0)
        snprintf(s, n, "%lluMiB", (unsigned long long)(b >> 20));
    else if (b % 1024 == 0 && b < (1u << 20))
        snprintf(s, n, "%lluKiB", (unsigned long long)(b >> 10));
    else
        snprintf(s, n, "%.1fMB", (double)b / 1e6);
}

static int same_series(const sl_io_bench_result *a, const sl_io_bench_result *b)
{
    return a->o.pattern == b->o.pattern && a->o.bs == b->o.bs && a->o.threads == b->o.threads;
}

int sl_io_bench_plot_svg(const char *path, const sl_io_bench_result *r, size_t n, sl_error *e)
{
    if (!r || n == 0)
        return sl_errorf(e, SL_E_ARG, "%s: nothing to plot", path);
    FILE *f = fopen(path, "w");
    if (!f)
        return sl_errorf(e, SL_E_IO, "%s: cannot write: %s", path, strerror(errno));
    double ymax = 0;
    unsigned qmin = r[0].o.qd, qmax = r[0].o.qd;
    for (size_t i = 0; i < n; i++) {
        double g = r[i].e2e_gbps > r[i].gbps ? r[i].e2e_gbps : r[i].gbps;
        ymax = g > ymax ? g : ymax;
        qmin = r[i].o.qd < qmin ? r[i].o.qd : qmin;
        qmax = r[i].o.qd > qmax ? r[i].o.qd : qmax;
    }
    /* y: round the top up to 1, 2 or 5 x 10^k */
    double top = ymax > 0 ? pow(10, floor(log10(ymax))) : 1;
    top = ymax <= top ? top : ymax <= 2 * top ? 2 * top : ymax <= 5 * top ? 5 * top : 10 * top;
    double lx0 = log2((double)qmin), lx1 = log2((double)qmax);
    if (lx1 - lx0 < 1) {
        lx0 -= 0.5;
        lx1 += 0.5;
    }
    const int pw = W - L - R, ph = H - T - B;
#define X(q) (L + (log2((double)(q)) - lx0) / (lx1 - lx0) * pw)
#define Y(g) (T + ph - (g) / top * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    char title[300];
    const char *base = strrchr(r[0].o.path, '/');
    snprintf(title, sizeof title, "sluice bench io: %s (%s)", base ? base + 1 : r[0].o.path,
             r[0].direct ? "O_DIRECT" : "page cache");
    fprintf(f, "<text x=\"%d\" y=\"28\" font-size=\"15\">", L);
    for (const char *c = title; *c; c++) /* escape the file name */
        fputs(*c == '<' ? "&lt;" : *c == '&' ? "&amp;" : *c == '>' ? "&gt;" : (char[]){ *c, 0 }, f);
    fprintf(f, "</text>\n");
    for (int k = 0; k <= 5; k++) { /* horizontal grid and y labels */
        double g = top * k / 5;
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                L, L + pw, Y(g), Y(g), L - 6, Y(g) + 4, g);
    }
    for (unsigned q = 1; q <= qmax; q *= 2) /* x ticks at powers of two */
        if (q >= qmin)
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>"
                       "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%u</text>\n",
                    X(q), X(q), T, T + ph, X(q), T + ph + 18, q);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">queue depth (requests in flight per thread)</text>\n",
            L + pw / 2, H - 18);
    fprintf(f, "<text transform=\"translate(18 %d) rotate(-90)\" text-anchor=\"middle\">GB/s</text>\n", T + ph / 2);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", L, T, pw, ph);
    /* series: first occurrence of each (pattern, bs, threads) in input order */
    int nseries = 0;
    for (size_t i = 0; i < n; i++) {
        int first = 1;
        for (size_t j = 0; j < i && first; j++)
            first = !same_series(&r[j], &r[i]);
        if (!first)
            continue;
        const char *col = colors[nseries % (sizeof colors / sizeof *colors)];
        for (int pass = 0; pass < (r[i].e2e_gbps > 0 ? 2 : 1); pass++) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", col,
                    pass ? " stroke-dasharray=\"6 4\"" : "");
            for (size_t j = i; j < n; j++)
                if (same_series(&r[j], &r[i]))
                    fprintf(f, "%.1f,%.1f ", X(r[j].o.qd), Y(pass ? r[j].e2e_gbps : r[j].gbps));
            fprintf(f, "\"/>\n");
            for (size_t j = i; j < n; j++)
                if (same_series(&r[j], &r[i])) {
                    double g = pass ? r[j].e2e_gbps : r[j].gbps;
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>"
                               "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\">%.2f</text>\n",
                            X(r[j].o.qd), Y(g), col, X(r[j].o.qd), Y(g) - 7, g);
                }
            char bs[32];
            size_label(r[i].o.bs, bs, sizeof bs);
            int ly = T + 14 + 20 * nseries + (pass ? 10 : 0);
            fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                       "<text x=\"%d\" y=\"%d\">%s %s x%u%s</text>\n",
                    W - R + 12, W - R + 36, ly, ly, col, pass ? " stroke-dasharray=\"6 4\"" : "", W - R + 42, ly + 4,
                    sl_io_bench_pattern_name(r[i].o.pattern), bs, r[i].o.threads, pass ? " to VRAM" : "");
            if (pass)
                nseries++;
        }
        nseries++;
    }
#undef X
#undef Y
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0)
        return sl_errorf(e, SL_E_IO, "%s: write failed: %s", path, strerror(errno));
    return SL_OK;
}

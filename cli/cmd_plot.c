/* cmd_plot.c - `moe plot`: pictures from a training log (JSON lines written by `moe train`):
 * loss.svg (training and validation loss over steps) and load.svg (each expert's share of the
 * routed tokens over steps). Plain SVG written here, so no plotting package is needed. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double *x, *y;
    int n, cap;
} series;

static void push(series *s, double x, double y) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->x = realloc(s->x, sizeof(double) * s->cap);
        s->y = realloc(s->y, sizeof(double) * s->cap);
        if (!s->x || !s->y) cli_die("out of memory reading the log");
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
}

/* value of "key": in a JSON line we wrote ourselves; NAN if absent */
static double num(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

static const char *COLORS[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                               "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

/* One chart: lines of several series on shared axes. */
static void svg_chart(const char *path, const char *title, const char *ylabel, series *ss,
                      const char **names, int ns) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < ns; s++)
        for (int i = 0; i < ss[s].n; i++) {
            x0 = fmin(x0, ss[s].x[i]);
            x1 = fmax(x1, ss[s].x[i]);
            if (isfinite(ss[s].y[i])) {
                y0 = fmin(y0, ss[s].y[i]);
                y1 = fmax(y1, ss[s].y[i]);
            }
        }
    if (!(x1 > x0)) x1 = x0 + 1;
    if (!(y1 > y0)) y1 = y0 + 1;
    double pad = 0.05 * (y1 - y0);
    y0 -= pad;
    y1 += pad;
    FILE *f = fopen(path, "w");
    if (!f) cli_die("cannot write %s: %s", path, strerror(errno));
    const int W = 800, H = 450, L = 70, R = 170, T = 40, Bm = 50;
    const double pw = W - L - R, ph = H - T - Bm;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"16\">%s</text>\n", L, title);
    for (int t = 0; t <= 5; t++) {
        double yv = y0 + (y1 - y0) * t / 5, py = T + ph - ph * t / 5;
        double xv = x0 + (x1 - x0) * t / 5, px = L + pw * t / 5;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, py, L + pw, py);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", L - 6, py + 4, yv);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", px, T + ph + 18, xv);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", L, T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">step</text>\n", L + pw / 2, H - 10);
    fprintf(f, "<text x=\"16\" y=\"%.1f\" transform=\"rotate(-90 16 %.1f)\" text-anchor=\"middle\">%s</text>\n", T + ph / 2,
            T + ph / 2, ylabel);
    for (int s = 0; s < ns; s++) {
        const char *col = COLORS[s % 10];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
        for (int i = 0; i < ss[s].n; i++) {
            if (!isfinite(ss[s].y[i])) continue;
            fprintf(f, "%.1f,%.1f ", L + pw * (ss[s].x[i] - x0) / (x1 - x0), T + ph - ph * (ss[s].y[i] - y0) / (y1 - y0));
        }
        fprintf(f, "\"/>\n");
        if (ns <= 20) {
            fprintf(f, "<line x1=\"%.0f\" y1=\"%d\" x2=\"%.0f\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>\n", L + pw + 12,
                    T + 8 + 16 * s, L + pw + 30, T + 8 + 16 * s, col);
            fprintf(f, "<text x=\"%.0f\" y=\"%d\">%s</text>\n", L + pw + 36, T + 12 + 16 * s, names[s]);
        }
    }
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) cli_die("writing %s failed: %s", path, strerror(errno));
}

int cmd_plot(int argc, char **argv) {
    static const char *U = "usage: moe plot --log runs/lm/log.jsonl [--out DIR]\n"
                           "Writes DIR/loss.svg (train and valid loss) and DIR/load.svg (share of tokens per\n"
                           "expert over steps); DIR defaults to the log's directory.\n";
    const char *log = NULL, *out = NULL;
    cli_opt opts[] = {{"log", &log, NULL}, {"out", &out, NULL}};
    cli_parse(argc, argv, opts, 2, U);
    if (!log) cli_die("--log is required (see moe plot --help)");
    char dir[4096];
    if (!out) {
        snprintf(dir, sizeof dir, "%s", log);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
        out = dir;
    }
    FILE *f = fopen(log, "r");
    if (!f) cli_die("cannot read %s: %s", log, strerror(errno));
    series loss[2] = {{0}, {0}};
    series *load = NULL;
    int nexp = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        double step = num(line, "step");
        if (!isfinite(step)) continue;
        if (strstr(line, "\"kind\":\"train\"")) {
            push(&loss[0], step, num(line, "loss"));
            const char *p = strstr(line, "\"expert_tokens\":[");
            if (!p) continue;
            p += strlen("\"expert_tokens\":[");
            double vals[4096], tot = 0;
            int m = 0;
            while (*p && *p != ']' && m < 4096) {
                char *end;
                vals[m] = strtod(p, &end);
                if (end == p) break;
                tot += vals[m++];
                p = *end == ',' ? end + 1 : end;
            }
            if (m == 0 || tot <= 0) continue;
            if (!load) {
                nexp = m;
                load = calloc((size_t)m, sizeof(series));
                if (!load) cli_die("out of memory");
            }
            for (int e = 0; e < nexp && e < m; e++) push(&load[e], step, 100.0 * vals[e] / tot);
        } else if (strstr(line, "\"kind\":\"valid\"")) {
            push(&loss[1], step, num(line, "loss"));
        }
    }
    free(line);
    fclose(f);
    if (loss[0].n == 0) cli_die("%s has no training records (is it a moe train log?)", log);
    char path[4200];
    const char *lnames[2] = {"train", "valid"};
    snprintf(path, sizeof path, "%s/loss.svg", out);
    svg_chart(path, "loss (nats per token)", "loss", loss, lnames, 2);
    printf("wrote %s\n", path);
    if (load) {
        const char **names = malloc(sizeof(char *) * nexp);
        char (*buf)[24] = malloc(24 * (size_t)nexp);
        for (int e = 0; e < nexp; e++) {
            snprintf(buf[e], 24, "expert %d", e);
            names[e] = buf[e];
        }
        snprintf(path, sizeof path, "%s/load.svg", out);
        svg_chart(path, "share of routed tokens per expert (%)", "% of tokens", load, names, nexp);
        printf("wrote %s\n", path);
        for (int e = 0; e < nexp; e++) {
            free(load[e].x);
            free(load[e].y);
        }
        free(load);
        free(names);
        free(buf);
    }
    for (int i = 0; i < 2; i++) {
        free(loss[i].x);
        free(loss[i].y);
    }
    return 0;
}

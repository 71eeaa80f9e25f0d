/* moe_opts.c - the MoE layer's settings on the command line, in one table: every subcommand that
 * builds an MoE layer (train, seq2seq train, classify, bench layer, bench lm) takes them with the
 * same option name, the same range, the same error message and the same help lines. */
#include "cli.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { INT_SETTING, REAL_SETTING, FLAG_SETTING } setting_kind;

typedef struct {
    unsigned bit;       /* the CLI_MOE_* bit of a command that takes it */
    const char *name;   /* option name without "--" */
    size_t arg;         /* offsetof(cli_moe_args, ...): where cli_parse puts the value */
    size_t field;       /* offsetof(moe_layer_config, ...): where the setting goes */
    setting_kind kind;
    double lo, hi;      /* the one range (integers: inclusive, as ints) */
    const char *what;   /* for the message "--k '0': give <what> as an integer from 1 to ..." */
    const char *meta;   /* shown in the help when the setting has no default (else the default) */
    const char *help;   /* the rest of the help line */
} setting;

#define ARG(f) offsetof(cli_moe_args, f)
#define CFG(f) offsetof(moe_layer_config, f)
#define MAX_COUNT (1 << 20)

static const setting SETTINGS[] = {
    {CLI_MOE_D, "d", ARG(d), CFG(d), INT_SETTING, 1, 65536, "the model width", NULL,
     "model width, the MoE layer's input and output size"},
    {CLI_MOE_EXPERTS, "experts", ARG(experts), CFG(n), INT_SETTING, 1, MAX_COUNT, "the number of experts", NULL,
     "number of experts n"},
    {CLI_MOE_K, "k", ARG(k), CFG(k), INT_SETTING, 1, MAX_COUNT, "the experts per token", NULL,
     "experts per token; at most --experts, or a group's experts"},
    {CLI_MOE_H, "h", ARG(h), CFG(h), INT_SETTING, 1, MAX_COUNT, "the hidden size of an expert", NULL,
     "hidden size of each expert"},
    {CLI_MOE_GROUPS, "groups", ARG(groups), CFG(groups), INT_SETTING, 1, MAX_COUNT, "the number of groups", "A",
     "hierarchical MoE (SPEC 1.6): A groups of experts/A experts (default: flat)"},
    {CLI_MOE_GROUPS, "k-groups", ARG(k_groups), CFG(k_groups), INT_SETTING, 1, MAX_COUNT, "the groups per token",
     NULL, "with --groups: groups per token, at most --groups (2, or 1 with --groups 1)"},
    {CLI_MOE_BALANCE, "w-importance", ARG(w_importance), CFG(w_importance), REAL_SETTING, 0, 1e6,
     "the weight of CV(Importance)^2", NULL, "weight of the balancing loss CV(Importance)^2"},
    {CLI_MOE_BALANCE, "w-load", ARG(w_load), CFG(w_load), REAL_SETTING, 0, 1e6, "the weight of CV(Load)^2", NULL,
     "weight of the balancing loss CV(Load)^2"},
    {CLI_MOE_NOISE, "noise-eps", ARG(noise_eps), CFG(noise_eps), REAL_SETTING, 0, 1e6, "the gate noise floor", NULL,
     "gate noise floor: sigma = softplus(x W_noise) + noise-eps"},
    {CLI_MOE_BIAS, "bias", ARG(bias), CFG(bias), FLAG_SETTING, 0, 1, NULL, NULL,
     "experts with biases b1 and b2 (default: none, as in the paper)"},
};
#define NSETTINGS (int)(sizeof SETTINGS / sizeof SETTINGS[0])

void cli_moe_init(cli_moe *m, unsigned has, moe_layer_config defaults) {
    memset(m, 0, sizeof *m);
    m->has = has;
    m->cfg = defaults;
}

static void *arg_of(cli_moe *m, const setting *s) { return (char *)&m->arg + s->arg; }
static int *int_field(moe_layer_config *c, const setting *s) { return (int *)(void *)((char *)c + s->field); }
static float *real_field(moe_layer_config *c, const setting *s) { return (float *)(void *)((char *)c + s->field); }

/* A range's end as people write it: 65536, 1048576, 0.5, 1e6 (not %g's 1e+06). */
static const char *num(char *b, size_t cap, const setting *s, double x) {
    if (s->kind == INT_SETTING) {
        snprintf(b, cap, "%.0f", x);
        return b;
    }
    snprintf(b, cap, "%g", x);
    char *e = strstr(b, "e+");
    if (e) {
        const char *digits = e[2] == '0' ? e + 3 : e + 2;
        memmove(e + 1, digits, strlen(digits) + 1);
    }
    return b;
}

/* "  --experts 16        number of experts n (1 to 1048576)" for each setting of the command */
static void append_help(char *b, size_t cap, const cli_moe *m) {
    size_t len = strlen(b);
    len += (size_t)snprintf(b + len, cap - len, "\nMoE layer (the same options, ranges and messages in every moe command):\n");
    for (int i = 0; i < NSETTINGS && len < cap; i++) {
        const setting *s = &SETTINGS[i];
        if (!(m->has & s->bit)) continue;
        char opt[64];
        moe_layer_config c = m->cfg;
        if (s->kind == FLAG_SETTING || (s->meta && *int_field(&c, s) == 0)) {
            snprintf(opt, sizeof opt, "--%s%s%s", s->name, s->meta ? " " : "", s->meta ? s->meta : "");
        } else if (s->kind == INT_SETTING) {
            int v = *int_field(&c, s);
            if (s->field == CFG(k_groups) && v == 0) v = 2;
            snprintf(opt, sizeof opt, "--%s %d", s->name, v);
        } else {
            snprintf(opt, sizeof opt, "--%s %g", s->name, *real_field(&c, s));
        }
        char range[64] = "", lo[24], hi[24];
        if (s->kind != FLAG_SETTING && s->field != CFG(groups) && s->field != CFG(k_groups))
            snprintf(range, sizeof range, " (%s to %s)", num(lo, sizeof lo, s, s->lo), num(hi, sizeof hi, s, s->hi));
        len += (size_t)snprintf(b + len, cap - len, "  %-19s %s%s\n", opt, s->help, range);
    }
}

/* One value into m->cfg, or the one message for a value out of its range. */
static void apply(cli_moe *m, const setting *s) {
    if (s->kind == FLAG_SETTING) {
        if (*(int *)arg_of(m, s)) {
            *int_field(&m->cfg, s) = 1;
            m->given = 1;
        }
        return;
    }
    const char *v = *(const char **)arg_of(m, s);
    if (!v) return;
    m->given = 1;
    int xi;
    double xd;
    const int ok = s->kind == INT_SETTING ? cli_try_int(v, (int)s->lo, (int)s->hi, &xi)
                                          : cli_try_double(v, s->lo, s->hi, &xd);
    char lo[24], hi[24];
    if (!ok)
        cli_die("--%s '%s': give %s as %s from %s to %s", s->name, v, s->what,
                s->kind == INT_SETTING ? "an integer" : "a number", num(lo, sizeof lo, s, s->lo), num(hi, sizeof hi, s, s->hi));
    if (s->kind == INT_SETTING) *int_field(&m->cfg, s) = xi;
    else *real_field(&m->cfg, s) = (float)xd;
}

void cli_parse_moe(int argc, char **argv, const cli_opt *opts, int nopts, cli_moe *m, const char *usage) {
    cli_opt *all = malloc(sizeof(cli_opt) * (size_t)(nopts + NSETTINGS));
    const size_t cap = strlen(usage) + 4096;
    char *help = malloc(cap);
    if (!all || !help) cli_die("out of memory");
    memcpy(all, opts, sizeof(cli_opt) * (size_t)nopts);
    int n = nopts;
    for (int i = 0; i < NSETTINGS; i++) {
        const setting *s = &SETTINGS[i];
        if (!(m->has & s->bit)) continue;
        all[n].name = s->name;
        all[n].str = s->kind == FLAG_SETTING ? NULL : (const char **)arg_of(m, s);
        all[n].flag = s->kind == FLAG_SETTING ? (int *)arg_of(m, s) : NULL;
        n++;
    }
    snprintf(help, cap, "%s", usage);
    append_help(help, cap, m);
    cli_parse(argc, argv, all, n, help);
    free(all);
    free(help);
    for (int i = 0; i < NSETTINGS; i++)
        if (m->has & SETTINGS[i].bit) apply(m, &SETTINGS[i]);
    if (m->arg.groups && !m->arg.k_groups) m->cfg.k_groups = m->cfg.groups < 2 ? m->cfg.groups : 2;
}

void cli_moe_check(const cli_moe *m) {
    const moe_layer_config *c = &m->cfg;
    if (m->arg.k_groups && !m->arg.groups)
        cli_die("--k-groups needs --groups: it picks among the groups of a hierarchical MoE");
    if (c->k > c->n)
        cli_die("--k %d exceeds --experts %d: each token picks k of the experts; give a --k of at most %d or more "
                "--experts", c->k, c->n, c->n);
    if (c->groups <= 0) return;
    if (c->n % c->groups)
        cli_die("--experts %d do not split into --groups %d of equal size: give a --groups that divides --experts",
                c->n, c->groups);
    if (c->k_groups > c->groups)
        cli_die("--k-groups %d exceeds --groups %d: each token picks k-groups of the groups; give a --k-groups of at "
                "most %d", c->k_groups, c->groups, c->groups);
    if (c->k > c->n / c->groups)
        cli_die("--k %d exceeds the %d experts of a group (--experts %d / --groups %d): give a --k of at most %d",
                c->k, c->n / c->groups, c->n, c->groups, c->n / c->groups);
}

/* The layer settings that the LM's and the translation model's configs both carry, under the
 * layer config's names: one list, so that a setting added to all three is copied both ways for
 * both models. The LM's config carries groups and k_groups too (the translation model has no
 * hierarchical layer). */
#define SHARED_LAYER_FIELDS(X) X(d) X(n) X(k) X(h) X(w_importance) X(w_load) X(noise_eps)
#define FROM_MODEL(f) l.f = c->f;
#define TO_MODEL(f) c->f = m->cfg.f;

moe_layer_config cli_moe_of_lm(const moe_lm_config *c) {
    moe_layer_config l = moe_layer_config_default();
    SHARED_LAYER_FIELDS(FROM_MODEL)
    l.groups = c->groups;
    l.k_groups = c->k_groups;
    return l;
}

void cli_moe_to_lm(const cli_moe *m, moe_lm_config *c) {
    SHARED_LAYER_FIELDS(TO_MODEL)
    c->groups = m->cfg.groups;
    c->k_groups = m->cfg.k_groups;
}

moe_layer_config cli_moe_of_s2s(const moe_s2s_config *c) {
    moe_layer_config l = moe_layer_config_default();
    SHARED_LAYER_FIELDS(FROM_MODEL)
    return l;
}

void cli_moe_to_s2s(const cli_moe *m, moe_s2s_config *c) { SHARED_LAYER_FIELDS(TO_MODEL) }

#undef TO_MODEL
#undef FROM_MODEL
#undef SHARED_LAYER_FIELDS

moe_ffn_kind cli_ffn(const char *v) {
    if (strcmp(v, "moe") == 0) return MOE_FFN_MOE;
    if (strcmp(v, "dense") == 0) return MOE_FFN_DENSE;
    if (strcmp(v, "none") == 0) return MOE_FFN_NONE;
    cli_die("--ffn must be moe, dense or none, got '%s'", v);
}

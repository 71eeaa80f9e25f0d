/* main.c - `moe <subcommand>`: dispatch to the subcommands. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char *USAGE =
    "usage: moe <command> [options]   (moe <command> --help for its options)\n"
    "\n"
    "commands:\n"
    "  train     train the paper's LSTM-MoE language model on a text file\n"
    "  eval      loss and perplexity of a checkpoint on a text file\n"
    "  sample    generate text from a checkpoint\n"
    "  info      a checkpoint's settings and size\n"
    "  plot      loss and expert-load pictures (SVG) from a training log\n"
    "  classify  train and test an MoE classifier on Fashion-MNIST (the demo)\n"
    "  layer     evaluate one MoE layer from safetensors files (forward, gradients)\n"
    "  diff      compare the tensors of two safetensors files\n"
    "  bleu      BLEU of a hypothesis file against a reference file\n"
    "  seq2seq   train (cross-entropy, MIXER, SCST) or evaluate a German->English translation model\n"
    "  translate translate sentences on stdin with a seq2seq checkpoint\n"
    "  bench     benchmarks (moe bench layer --help)\n";

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    /* one row a subcommand; each gets argv from its own name on, as a program's main does */
    static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
    } CMDS[] = {{"layer", cmd_layer},     {"diff", cmd_diff},       {"classify", cmd_classify},
                {"bench", cmd_bench},     {"train", cmd_train},     {"eval", cmd_eval},
                {"sample", cmd_sample},   {"info", cmd_info},       {"plot", cmd_plot},
                {"bleu", cmd_bleu},       {"seq2seq", cmd_seq2seq}, {"translate", cmd_translate}};
    const char *c = argv[1];
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++)
        if (strcmp(c, CMDS[i].name) == 0) return CMDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "moe: error: unknown command '%s'\n\n%s", c, USAGE);
    return 2;
}

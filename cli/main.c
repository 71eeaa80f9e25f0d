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
    const char *c = argv[1];
    if (strcmp(c, "layer") == 0) return cmd_layer(argc - 1, argv + 1);
    if (strcmp(c, "diff") == 0) return cmd_diff(argc - 1, argv + 1);
    if (strcmp(c, "classify") == 0) return cmd_classify(argc - 1, argv + 1);
    if (strcmp(c, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(c, "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(c, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(c, "sample") == 0) return cmd_sample(argc - 1, argv + 1);
    if (strcmp(c, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(c, "plot") == 0) return cmd_plot(argc - 1, argv + 1);
    if (strcmp(c, "bleu") == 0) return cmd_bleu(argc - 1, argv + 1);
    if (strcmp(c, "seq2seq") == 0) return cmd_seq2seq(argc - 1, argv + 1);
    if (strcmp(c, "translate") == 0) return cmd_translate(argc - 1, argv + 1);
    fprintf(stderr, "moe: error: unknown command '%s'\n\n%s", c, USAGE);
    return 2;
}

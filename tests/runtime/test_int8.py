"""The int8 precision quantises every Linear layer but the feed-forward output projections of the first two thirds
of the encoder, where int8 changed the most labels (bench.int8_layers)."""

from __future__ import annotations


def test_int8_keeps_the_first_feed_forward_outputs_in_fp32(tmp_path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from runtime.classifier import Classifier
    from runtime.precision import int8_layer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, num_labels=2, problem_type="multi_label_classification")
    model = BertForSequenceClassification(config)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(0x4E00 + i) for i in range(59)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    clf = Classifier(model, tokenizer, ["a", "b"], [0.5, 0.5], "other", max_length=16)
    clf.set_precision("int8")

    kept = {name for name, module in clf._runner.named_modules() if type(module) is torch.nn.Linear}
    assert kept == {"bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"}
    assert not int8_layer("bert.encoder.layer.1.output.dense", 4) and int8_layer("bert.encoder.layer.2.output.dense", 4)
    assert int8_layer("bert.encoder.layer.0.attention.output.dense", 4)  # attention's projection: int8
    assert int8_layer("bert.encoder.layer.0.intermediate.dense", 4) and int8_layer("classifier", 4)
    probs = clf.probabilities(["一丁", "七万丈三"])
    assert probs.shape == (2, 2) and ((probs > 0) & (probs < 1)).all()

"""Fine-tuning across texts: a model continued on text with characters it lacks grows its charset,
keeps every learned weight, and says what it came from (issue 26)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import corpus_text
from textgen.charset import Charset
from textgen.options import RECIPES, TrainConfig
from textgen.sampling import Uniforms
from trainer import export
from trainer.decode import PipelinedDecoder
from trainer.model import NEW_CHAR_LOGIT_GAP, grow_charset
from trainer.training import LearningRateSchedule, generate_ids, train

SAMPLE_LEN = 16
# The new text: Shakespeare the parent never saw, with characters it has never seen.
NEW_CHARS = "{}~#[]"


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A small model trained on Shakespeare without '!' and '?', saved as a bundle."""
    text = corpus_text("tinyshakespeare", 40_000).replace("!", ".").replace("?", ".")
    config = TrainConfig(lstm_layer_sizes=(48,), sample_len=SAMPLE_LEN, epochs=2, examples_per_epoch=1024,
                         batch_size=64, display_length=0, seed=5)
    result = train(text, config, corpus_name="shakespeare-plain", corpus_sha256="ab" * 32)
    path = export.publish(result.model, result.meta, tmp_path_factory.mktemp("models"), "parent")[0]
    return {"text": text, "path": path, "result": result}


@pytest.fixture(scope="module")
def new_text():
    """20,000 characters of Shakespeare after the parent's, with a line of new characters every 400."""
    plays = corpus_text("tinyshakespeare", 60_000)[40_000:]
    return "".join(plays[i : i + 400] + "\nwhat? {a} ~b~ #1 [c]!\n" for i in range(0, len(plays), 400))


def test_a_grown_model_gives_the_old_characters_the_same_probabilities_and_the_same_text(parent, new_text):
    model, meta = export.load_keras(parent["path"])
    old = Charset(meta["charset"])
    new = old.grown(new_text)
    added = "".join(c for c in new.chars if c not in old)
    assert added == "".join(sorted(set(new_text) - set(parent["text"]))) and set(NEW_CHARS + "!?") <= set(added)
    probe = np.stack([new.encode(new_text[i : i + SAMPLE_LEN]) for i in range(0, 8000, 40)])
    grown = grow_charset(model, old.chars, new.chars, probe)

    windows = [parent["text"][i : i + SAMPLE_LEN] for i in range(0, 30_000, 97)]
    before = model.predict(np.stack([old.encode(w) for w in windows]), verbose=0)
    after = grown.predict(np.stack([new.encode(w) for w in windows]), verbose=0)
    kept = [new.chars.index(c) for c in old.chars]
    np.testing.assert_allclose(after[:, kept], before, atol=1e-6, rtol=0)
    assert after[:, [new.chars.index(c) for c in added]].max() < np.exp(-NEW_CHAR_LOGIT_GAP + 1)
    # Seeded text from the same prompt is character for character what the parent writes.
    prompt = parent["text"][:SAMPLE_LEN]
    for temperature in (0.0, 0.6, 1.0):
        texts = [cs.decode(generate_ids(PipelinedDecoder(m, SAMPLE_LEN), cs.encode(prompt), 600, [temperature],
                                        [Uniforms(11)])[0]) for m, cs in ((model, old), (grown, new))]
        assert texts[0] == texts[1], temperature


def test_fine_tuning_on_text_with_new_characters_learns_them_and_records_its_lineage(parent, new_text):
    # The recipe with five times its rate: this small model learns the new line's context in 192 steps.
    config = TrainConfig.from_dict({"epochs": 3, "examples_per_epoch": 2048, "learning_rate": 0.01,
                                    "display_length": 40, "seed": 3}, continuing=True)
    assert config.recipe == "finetune"
    result = train(new_text, config, corpus_name="new", corpus_sha256="cd" * 32, init_from=parent["path"])
    meta = result.meta
    parent_meta = parent["result"].meta
    assert meta["charset"] == Charset(parent_meta["charset"]).grown(new_text).chars
    assert meta["lstm_layer_sizes"] == [48] and meta["sample_len"] == SAMPLE_LEN  # the parent's
    assert meta["training"]["recipe"] == "finetune" and meta["training"]["warmup_steps"] == 0
    assert meta["parent"] == {"name": "parent", "version": 1, "path": str(parent["path"]),
                              "corpus_sha256": "ab" * 32,
                              "characters_added": "".join(sorted(set(new_text) - set(parent["text"])))}
    assert meta["epochs"] == parent_meta["epochs"] + 3
    # The new characters are learned: after "\nwhat? ", '{' went from about e^-20 (grown) through its
    # frequency in the text (calibrated, about 1/400) to a real chance.
    charset = Charset(meta["charset"])
    window = np.stack([charset.encode(("ain.\nwhat? ")[-SAMPLE_LEN:].rjust(SAMPLE_LEN, " "))])
    probs = result.model.predict(window, verbose=0)[0]
    assert probs[charset.chars.index("{")] > 0.05, probs[charset.chars.index("{")]


def test_the_finetune_recipe_starts_at_its_peak_rate_and_ends_at_a_tenth():
    config = TrainConfig.from_recipe("finetune", epochs=4)
    schedule = LearningRateSchedule.of(config, batches_per_epoch=100)
    assert RECIPES["finetune"].settings["learning_rate"] == 0.002
    assert schedule.at(0, 0.0) == pytest.approx(0.002)  # no warm-up from zero on trained weights
    assert schedule.at(200, 0.0) == pytest.approx(0.002 * (0.1 + 0.9 * 0.5))
    assert schedule.at(400, 0.0) == pytest.approx(0.0002)
    # A recipe given with --from wins; without --from the default stays the original's.
    assert TrainConfig.from_dict({"recipe": "fast"}, continuing=True).recipe == "fast"
    assert TrainConfig.from_dict({}).recipe == "original"

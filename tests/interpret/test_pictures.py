"""Every picture is drawn from a real model's numbers, opened again, and checked for its size
and for holding a picture (many colors, not one flat field); the attention page is driven in
headless chromium: picking a stack, layer and head shows that head's weights."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from lmforge.interpret import patterns
from lmforge.interpret import pictures as pic
from lmforge.interpret.attribution import attribute, next_token_pick
from lmforge.interpret.lens import lens_losses, logit_lens, top_tokens
from lmforge.interpret.patching import logit_difference, patching_sweep
from lmforge.tokenizers import Tokenizer
from tests.models.test_hf import small


def check_png(path, min_size=(200, 150)):
    with Image.open(path) as image:
        assert image.format == "PNG"
        w, h = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert w >= min_size[0] and h >= min_size[1], (path, image.size)
    colors = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colors > 20, f"{path} looks blank ({colors} colors)"
    inked = (pixels.min(-1) < 200).mean()  # share of pixels that are not near-white
    assert 0.02 < inked < 0.98, f"{path}: {inked:.1%} of it is ink"
    return w, h


def labels(n, start=0):
    return [f"t{start + i}" for i in range(n)]


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(6)
    return small("gpt2"), torch.randint(3, 1000, (1, 10))


def test_attention_pictures_for_decoder_encoder_and_cross(tmp_path):
    torch.manual_seed(7)
    src, tgt = torch.randint(3, 1000, (1, 9)), torch.randint(3, 1000, (1, 6))
    got = {}
    for family in ("gpt2", "bert", "bart"):
        model = small(family)
        kwargs = {"decoder_input_ids": tgt} if family == "bart" else {}
        got[family] = patterns(model, src, **kwargs)
    bart = got["bart"]
    assert set(bart) == {"encoder", "decoder", "cross"}
    assert bart["cross"].shape[-2:] == (6, 9)  # target rows attend to source columns
    one = pic.attention_heatmap(bart["cross"][1, 0, 2], labels(6), labels(9), tmp_path / "x.png")
    w, h = check_png(one)
    grid = pic.attention_grid(
        got["gpt2"]["decoder"][:, 0], labels(9), labels(9), tmp_path / "g.png"
    )
    gw, gh = check_png(grid)
    assert gw > w  # 6 heads side by side are wider than one
    check_png(
        pic.attention_grid(got["bert"]["encoder"][:, 0], labels(9), labels(9), tmp_path / "e.png")
    )


def test_lens_attribution_and_patching_pictures(gpt2, tmp_path):
    model, ids = gpt2
    lens = logit_lens(model, ids)
    probs, top = top_tokens(lens, k=1)
    names = [[f"#{int(i)}" for i in row] for row in top[..., 0]]
    check_png(pic.lens_table(probs[..., 0], names, labels(10), tmp_path / "lens.png"))
    losses = lens_losses(lens[:, :, :-1], ids[:, 1:])
    check_png(pic.loss_by_layer({"held out": losses, "other": losses * 0.9}, tmp_path / "loss.png"))
    a = attribute(model, ids, next_token_pick(5), steps=8)
    check_png(pic.attribution_png(a.scores, labels(10), tmp_path / "attr.png", "IG"), (200, 80))
    page = pic.attribution_html(a.scores, labels(10), tmp_path / "attr.html", "IG <test>")
    text = page.read_text()
    assert text.count("<span") == 10 and "IG &lt;test&gt;" in text
    corrupt = ids.clone()
    corrupt[0, 3] += 1
    sweep = patching_sweep(model, ids, corrupt, logit_difference(5, 6))
    check_png(pic.patching_heatmap(sweep["restored"], labels(10), tmp_path / "patch.png"))
    pile = torch.randn(500, generator=torch.Generator().manual_seed(0)) + 30
    marks = {"123456: 9.0 bits": 26.0, "654321: 0.4 bits": 30.1}
    check_png(pic.exposure_png(pile, marks, tmp_path / "exposure.png"))


def test_a_flat_picture_is_caught(tmp_path):
    # the check itself can fail: an all-equal attention map is a flat field
    path = pic.attention_heatmap(torch.zeros(4, 4), labels(4), labels(4), tmp_path / "flat.png")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    white = Image.fromarray(np.full_like(pixels, 255))
    white.save(tmp_path / "white.png")
    with pytest.raises(AssertionError, match="blank"):
        check_png(tmp_path / "white.png")


def test_token_labels_keep_every_token_visible():
    tok = Tokenizer.train(["ab a\nb\x0c"], "char")
    ids = tok.encode("a b\n\x0c", add_special_tokens=False)
    assert pic.token_labels(tok, ids) == ["a", "·", "b", "\\n", "\\x0c"]
    byte_level = Tokenizer.train(["caf\u00e9 na\u00efve"] * 3, "bpe", 300)
    pieces = [i for i in range(byte_level.vocab_size) if "\ufffd" in byte_level.decode([i])]
    assert pieces and pic.token_labels(byte_level, pieces[:1]) == [f"<{pieces[0]}>"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM or not shutil.which("chromedriver"), reason="needs chromium")
def test_attention_page_picks_stack_layer_and_head_in_a_browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    torch.manual_seed(8)
    model = small("bart")
    src, tgt = torch.randint(3, 1000, (1, 5)), torch.randint(3, 1000, (1, 4))
    groups = {k: v[:, 0] for k, v in patterns(model, src, decoder_input_ids=tgt).items()}
    names = {
        "encoder": (labels(5), labels(5)),
        "decoder": (labels(4, 10), labels(4, 10)),
        "cross": (labels(4, 10), labels(5)),
    }
    page = pic.attention_html(groups, names, tmp_path / "attention.html", "bart </script>")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(page.as_uri())

        def cells():
            return [
                [
                    float(td.get_attribute("data-weight"))
                    for td in tr.find_elements(By.TAG_NAME, "td")
                ]
                for tr in driver.find_elements(By.CSS_SELECTOR, "#map tr")[1:]
            ]

        stack = Select(driver.find_element(By.ID, "stack"))
        assert [o.text for o in stack.options] == ["encoder", "decoder", "cross"]
        stack.select_by_visible_text("cross")
        Select(driver.find_element(By.ID, "layer")).select_by_value("1")
        Select(driver.find_element(By.ID, "head")).select_by_value("3")
        want = groups["cross"][1, 3]
        assert np.allclose(cells(), want.numpy(), atol=1e-4)  # 4 target rows x 5 source keys
        Select(driver.find_element(By.ID, "head")).select_by_value("mean")
        assert np.allclose(cells(), groups["cross"][1].mean(0).numpy(), atol=1e-4)
        assert "cross layer 1 head mean" in driver.find_element(By.ID, "shown").text
    finally:
        driver.quit()

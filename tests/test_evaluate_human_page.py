"""The annotation page in a real browser: open, answer three examples, export, aggregate.

Needs Debian's chromium (`apt-get install -y chromium`) driven by playwright against that
binary; `playwright install` (a browser download) is never used. Skipped only when the
chromium binary is absent.
"""
import json
import os
import shutil

import pytest

from onmt_mirror.evaluate import human_kit

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]

SRC = ["good morning . __eou__ morning ! __eou__ did you sleep well ?",
       "what are you cooking ?",
       "i lost my keys . __eou__ where did you last see them ?"]
HYPS = {"mirror": ["yes , i slept like a log .", "pasta with tomato sauce .", "on the kitchen table ."],
        "seq2seq": ["i don't know .", "i don't know .", "i don't know ."]}


def annotate(browser, page_path, tie_first, download_dir):
    """Prefer mirror's (non-"i don't know") response; optionally call the first item a tie."""
    page = browser.new_page(accept_downloads=True)
    page.goto("file://" + page_path)
    for step in range(3):
        assert page.inner_text("#status").startswith("Item %d of 3" % (step + 1))
        if tie_first and step == 0:
            page.click("#choose-tie")
        elif page.inner_text("#text-A") == "i don't know.":  # shown detokenised
            page.click("#choose-B")
        else:
            page.click("#choose-A")
    assert page.inner_text("#status").endswith("3 answered")
    with page.expect_download() as download:
        page.click("#export")
    target = os.path.join(download_dir, download.value.suggested_filename)
    download.value.save_as(target)
    page.close()
    return target


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed "
                    "(apt-get install -y chromium); the browser test of the annotation page needs it")
def test_three_annotators_in_chromium(tmp_path, capsys):
    from playwright.sync_api import sync_playwright

    for name, lines in [("test.src", SRC)] + list(HYPS.items()):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    kit = tmp_path / "kit"
    human_kit.main(["make", "--src", str(tmp_path / "test.src"), "--n", "3", "--seed", "2",
                    "--out", str(kit), "--hyp", "mirror=%s" % (tmp_path / "mirror"),
                    "--hyp", "seq2seq=%s" % (tmp_path / "seq2seq")])
    capsys.readouterr()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        exports = [annotate(browser, str(kit / ("annotator%d.html" % k)), tie_first=(k == 3),
                            download_dir=str(tmp_path)) for k in (1, 2, 3)]
        browser.close()
    assert json.loads(open(exports[0]).read())["annotator"] == "annotator1"
    assert human_kit.main(["aggregate", "--key", str(kit / "key.json"), *exports,
                           "--json", str(tmp_path / "human.json"),
                           "--plot", str(tmp_path / "human.png")]) == 0
    (row,) = json.loads((tmp_path / "human.json").read_text())["rows"]
    assert (row["wins"], row["losses"], row["ties"], row["n"]) == (8, 0, 1, 9)
    assert row["kappa"] == pytest.approx(-0.125)  # P = 7/9, Pe = 65/81
    table = capsys.readouterr().out
    assert "| mirror vs seq2seq | 88.9 [" in table and table.rstrip().endswith("| 9 | -0.125 |")

import pandas as pd
import pytest

from autopeft.errors import UserError
from autopeft.job.data import load_task_data
from autopeft.job.spec import TaskSpec


def test_builtin_rotten_tomatoes_is_deduplicated_without_plot_rows_and_split_the_same_way_twice():
    task = TaskSpec(dataset="rotten_tomatoes")
    data = load_task_data(task)
    assert data.label_names == ("fresh", "rotten")
    texts = [t[0] for t in data.train_texts + data.validation_texts]
    assert len(texts) == len(set(texts)) > 12000
    assert len(data.validation_labels) == pytest.approx(0.2 * len(texts), abs=1)
    again = load_task_data(task)
    assert again.validation_texts == data.validation_texts
    other = load_task_data(TaskSpec(dataset="rotten_tomatoes", split_seed=1))
    assert other.validation_texts != data.validation_texts


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_user_files_with_a_pair_of_text_columns(tmp_path, suffix):
    frame = pd.DataFrame({
        "premise": [f"premise {i}" for i in range(20)],
        "hypothesis": [f"hypothesis {i}" for i in range(20)],
        "gold": ["entail", "contradict", "neutral", "entail"] * 5,
    })
    path = tmp_path / f"pairs{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     ".parquet": lambda: frame.to_parquet(path)}[suffix]()
    data = load_task_data(TaskSpec(train_file=path, text_columns=["premise", "hypothesis"], label_column="gold",
                                   validation_size=5))
    assert data.label_names == ("contradict", "entail", "neutral")
    assert len(data.validation_labels) == 5 and len(data.train_labels) == 15
    premise, hypothesis = data.train_texts[0]
    assert premise.startswith("premise") and hypothesis.startswith("hypothesis")


def test_separate_validation_file(tmp_path, reviews_csv):
    frame = pd.read_csv(reviews_csv)
    frame.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[300:].to_csv(tmp_path / "dev.csv", index=False)
    data = load_task_data(TaskSpec(train_file=tmp_path / "train.csv", validation_file=tmp_path / "dev.csv",
                                   text_columns=["review"], label_column="sentiment"))
    assert len(data.train_labels) == 300 and len(data.validation_labels) == 100


def test_one_text_column_may_be_named_without_a_list(reviews_csv):
    data = load_task_data(TaskSpec(train_file=reviews_csv, text_columns="review", label_column="sentiment"))
    assert TaskSpec(train_file=reviews_csv, text_columns="review").text_columns == ["review"]
    assert data.train_texts and all(len(example) == 1 for example in data.train_texts)  # one text per example


def test_missing_column_names_the_column_and_the_columns_there(reviews_csv):
    with pytest.raises(UserError) as info:
        load_task_data(TaskSpec(train_file=reviews_csv, text_columns=["review"], label_column="stars"))
    assert "column 'stars' is not in" in str(info.value)
    assert "review, sentiment" in str(info.value)


def test_rows_without_a_label_are_left_out_and_the_user_is_told_how_many(tmp_path, caplog):
    frame = pd.DataFrame({"review": [f"review {i}" for i in range(30)],
                          "stars": ["good", "bad", None] * 10})
    path = tmp_path / "reviews.csv"
    frame.to_csv(path, index=False)
    with caplog.at_level("WARNING", logger="autopeft"):
        data = load_task_data(TaskSpec(train_file=path, text_columns=["review"], label_column="stars", validation_size=5))
    assert data.label_names == ("bad", "good")  # a missing label is not a class of its own
    assert len(data.train_labels) + len(data.validation_labels) == 20
    assert "task.train_file: 10 of 30 rows have no stars and are left out" in caplog.text


def test_numeric_labels_are_the_same_classes_in_a_file_with_a_missing_label_and_in_one_without(tmp_path):
    # a missing label makes pandas read the train file's labels as 0.0 and 1.0, the other files' as 0 and 1
    rows = {"text": [f"review {i}" for i in range(40)], "label": [0, 1] * 20}
    train = pd.DataFrame(rows).astype({"label": object})
    train.loc[3, "label"] = None
    train.to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows).iloc[:10].to_csv(tmp_path / "validation.csv", index=False)
    pd.DataFrame(rows).iloc[10:14].to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    data = load_task_data(TaskSpec(train_file=tmp_path / "train.csv", validation_file=tmp_path / "validation.csv",
                                   test_file=tmp_path / "test.jsonl", text_columns=["text"], label_column="label"))
    assert data.label_names == ("0", "1")
    assert set(data.train_labels) == set(data.validation_labels) == set(data.test_labels) == {0, 1}
    assert data.validation_labels[:2] == (0, 1)


def test_several_labels_per_example_an_empty_text_column_and_a_validation_class_the_training_data_lacks_are_refused(tmp_path, caplog):
    rows = pd.DataFrame({"text": [f"review {i}" for i in range(40)], "label": ["pos", "neg"] * 20})
    rows.to_csv(tmp_path / "train.csv", index=False)
    rows.assign(label=[["pos", "funny"], ["neg"]] * 20).to_json(tmp_path / "tags.jsonl", orient="records", lines=True)
    with pytest.raises(UserError, match=r"'label' holds several labels per example \(one is \['pos', 'funny'\]\).*one class"):
        load_task_data(TaskSpec(train_file=tmp_path / "tags.jsonl", text_columns=["text"], label_column="label"))
    rows.iloc[:10].assign(label=["Pos", "neg"] * 5).to_csv(tmp_path / "validation.csv", index=False)
    with pytest.raises(UserError, match=r"validation.csv has labels the training data does not: 'Pos'. Fix: spell each "
                                        r"class as the training data does \('neg', 'pos'\)"):
        load_task_data(TaskSpec(train_file=tmp_path / "train.csv", validation_file=tmp_path / "validation.csv",
                                text_columns=["text"], label_column="label"))
    rows.assign(title=None).to_csv(tmp_path / "titled.csv", index=False)  # a column named, but empty throughout
    with pytest.raises(UserError, match=r"task.text_columns: column 'title' has no text in any training example. Fix: "
                                        "name the columns that hold the texts: text, label, title"):
        load_task_data(TaskSpec(train_file=tmp_path / "titled.csv", text_columns=["title"], label_column="label"))
    rows.assign(label=["pos", "neg"] * 19 + ["rare", "neg"]).to_csv(tmp_path / "rare.csv", index=False)
    seed = next(s for s in range(100) if 38 in rows.sample(frac=1.0, random_state=s).index[:10])  # 'rare' held out
    with caplog.at_level("WARNING", logger="autopeft"):
        data = load_task_data(TaskSpec(train_file=tmp_path / "rare.csv", text_columns=["text"], label_column="label",
                                       validation_size=10, split_seed=seed))
    assert "rare" in data.label_names and data.label_names.index("rare") not in data.train_labels
    assert "1 validation examples are of classes no training example has ('rare')" in caplog.text


def test_a_test_file_is_read_as_the_training_data_is_and_held_apart_from_both_splits(tmp_path, caplog):
    frame = pd.DataFrame({"premise": [f"premise {i}" for i in range(24)], "hypothesis": [f"hypothesis {i}" for i in range(24)],
                          "gold": ["entail", "contradict", "neutral"] * 8})
    frame.iloc[:20].to_csv(tmp_path / "pairs.csv", index=False)
    test = frame.iloc[20:].assign(gold=["neutral", None, "entail", "contradict"])
    test.to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    data = load_task_data(TaskSpec(train_file=tmp_path / "pairs.csv", text_columns=["premise", "hypothesis"],
                                   label_column="gold", validation_size=5, test_file=tmp_path / "test.jsonl"))
    # the row without a label is left out, as in training data; labels index the classes the search trains on
    assert data.test_texts == (("premise 20", "hypothesis 20"), ("premise 22", "hypothesis 22"), ("premise 23", "hypothesis 23"))
    assert [data.label_names[i] for i in data.test_labels] == ["neutral", "entail", "contradict"]
    assert "task.test_file: 1 of 4 rows have no gold" in caplog.text
    assert not set(data.test_texts) & {*data.train_texts, *data.validation_texts}

    chats = [[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}] for i in range(12)]
    pd.DataFrame({"messages": chats[:10]}).to_json(tmp_path / "chats.jsonl", orient="records", lines=True)
    pd.DataFrame({"messages": chats[10:]}).to_json(tmp_path / "held.jsonl", orient="records", lines=True)
    data = load_task_data(TaskSpec(type="generation", train_file=tmp_path / "chats.jsonl", validation_size=2,
                                   test_file=tmp_path / "held.jsonl"))
    assert data.chat and [answer for _, answer in data.test_texts] == ["answer 10", "answer 11"]
    with pytest.raises(UserError, match="a conversation in .*bad.jsonl does not end with an assistant message"):
        pd.DataFrame({"messages": [chats[0][:1]]}).to_json(tmp_path / "bad.jsonl", orient="records", lines=True)
        load_task_data(TaskSpec(type="generation", train_file=tmp_path / "chats.jsonl", validation_size=2,
                                test_file=tmp_path / "bad.jsonl"))


def test_test_size_holds_out_test_examples_first_by_the_seeded_shuffle_and_leaves_the_default_split_alone(tmp_path,
                                                                                                        reviews_csv):
    task = {"train_file": reviews_csv, "text_columns": ["review"], "label_column": "sentiment", "validation_size": 100}
    plain = load_task_data(TaskSpec(**task))
    held = load_task_data(TaskSpec(**task, test_size=0.1))
    assert (len(held.test_texts), len(held.validation_texts), len(held.train_texts)) == (40, 100, 260)
    assert held.test_texts == load_task_data(TaskSpec(**task, test_size=40)).test_texts  # a fraction or a count
    assert not set(held.test_texts) & {*held.train_texts, *held.validation_texts}
    assert {*held.test_texts, *held.train_texts, *held.validation_texts} == {*plain.train_texts, *plain.validation_texts}
    assert [held.label_names[i] for i in held.test_labels] == [
        dict(zip(pd.read_csv(reviews_csv)["review"], pd.read_csv(reviews_csv)["sentiment"], strict=True))[t]
        for (t,) in held.test_texts]
    assert load_task_data(TaskSpec(**task, test_size=0.1, split_seed=1)).test_texts != held.test_texts
    assert plain.test_texts == () and plain.validation_texts == load_task_data(TaskSpec(**task)).validation_texts
    with pytest.raises(UserError, match="task.test_size: 400 leaves no train or no test examples out of 400"):
        load_task_data(TaskSpec(**task, test_size=400))
    # a class all of whose examples were held out: the search could not learn it
    rare = pd.read_csv(reviews_csv).assign(sentiment=lambda f: f["sentiment"].where(f.index != 7, "unsure"))
    rare.to_csv(tmp_path / "rare.csv", index=False)
    shuffled = rare.sample(frac=1.0, random_state=0).reset_index(drop=True)
    held = int(shuffled.index[shuffled["review"] == rare.loc[7, "review"]][0]) + 1
    with pytest.raises(UserError, match="task.test_size: the .* examples task.test_size holds out has labels the training "
                                        "and validation data do not: 'unsure'. Fix: hold out fewer examples"):
        load_task_data(TaskSpec(**{**task, "train_file": tmp_path / "rare.csv"}, test_size=held))


def test_test_size_beside_a_validation_file_holds_out_of_the_training_file_alone(tmp_path, reviews_csv):
    frame = pd.read_csv(reviews_csv)
    frame.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[300:].to_csv(tmp_path / "dev.csv", index=False)
    data = load_task_data(TaskSpec(train_file=tmp_path / "train.csv", validation_file=tmp_path / "dev.csv", test_size=50,
                                   text_columns=["review"], label_column="sentiment"))
    assert (len(data.train_texts), len(data.validation_texts), len(data.test_texts)) == (250, 100, 50)
    assert {t for (t,) in data.validation_texts} == set(frame.iloc[300:]["review"])
    assert {t for (t,) in data.test_texts} < set(frame.iloc[:300]["review"])


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_a_csv_a_spreadsheet_wrote_with_semicolons_tabs_or_bars_reads_as_its_columns(tmp_path, separator):
    """Spreadsheets write CSV with semicolons where the comma is the decimal mark; the texts keep their commas."""
    path = tmp_path / "reviews.csv"
    rows = [f"this film, number {i}, was {'great' if i % 2 else 'dull'}{separator}{'pos' if i % 2 else 'neg'}" for i in range(20)]
    path.write_text("\n".join([f"review{separator}stars", *rows]) + "\n")
    data = load_task_data(TaskSpec(train_file=path, text_columns=["review"], label_column="stars", validation_size=4))
    assert data.label_names == ("neg", "pos") and len(data.train_labels) == 16
    assert all(text.startswith("this film, number ") for (text,) in data.train_texts)


def test_a_file_that_is_not_utf8_is_refused_with_how_to_save_it(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes("review,stars\ncaf\u00e9 scene,pos\nslow,neg\n".encode("cp1252"))
    with pytest.raises(UserError) as info:
        load_task_data(TaskSpec(train_file=path, text_columns=["review"], label_column="stars"))
    assert info.value.field == "task.train_file" and "is not UTF-8 text" in info.value.problem
    assert info.value.fix.startswith("save it as UTF-8")


def test_alpaca_data_makes_each_prompt_of_its_instruction_and_its_input_when_there_is_one(tmp_path):
    rows = [{"instruction": f"Translate number {i} into words.", "input": f"{i}" if i % 2 else "", "output": f"word {i}"}
            for i in range(20)]
    path = tmp_path / "alpaca.json"
    pd.DataFrame(rows).to_json(path, orient="records")
    task = TaskSpec(type="generation", train_file=path, prompt_column=["instruction", "input"], completion_column="output",
                    validation_size=4, test_size=4)
    data = load_task_data(task)
    examples = dict(data.train_texts + data.validation_texts + data.test_texts)
    assert len(examples) == 20 and len(data.validation_texts) == 4 and len(data.test_texts) == 4
    assert examples["Translate number 3 into words.\n\n3"] == "word 3"  # an input, a blank line after the instruction
    assert examples["Translate number 4 into words."] == "word 4"  # no input: the instruction alone
    with pytest.raises(UserError) as info:
        load_task_data(TaskSpec(type="generation", train_file=path))
    assert "has neither 'messages' nor 'prompt' and 'completion'" in info.value.problem
    assert "Alpaca's: prompt_column: [instruction, input], completion_column: output" in info.value.fix

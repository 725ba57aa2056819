#include <catch2/catch.hpp>
#include <unistd.h>

#include "common/error.hpp"
#include "planner/config.hpp"
#include "tests/test_files.hpp"

using overlord::errc;
using overlord::error;
using overlord::planner::job_config;
using overlord::planner::load_config;
using overlord::planner::parse_override;
using overlord::testing::temp_dir;

namespace {

// A folder with fake tokenizer files, two JSONL shards and a text file.
struct config_fixture {
  temp_dir dir{"config"};

  config_fixture() {
    dir.write("gpt2/encoder.json", "{}");
    dir.write("gpt2/vocab.bpe", "");
    dir.write("mail/b.jsonl", "{\"text\": \"b\"}\n");
    dir.write("mail/a.jsonl", "{\"text\": \"a\"}\n");
    dir.write("books/one.txt", "one");
  }

  std::string write_config(const std::string& body) {
    return dir.write("job.yaml", body);
  }

  static std::string valid_body() {
    return "seed: 7\n"
           "sequence_length: 128\n"
           "rows_per_rank: 2\n"
           "ranks: 2\n"
           "tokenizer: gpt2\n"
           "sources:\n"
           "  - name: mail\n"
           "    format: jsonl\n"
           "    text_field: text\n"
           "    paths: mail/*.jsonl\n"
           "    weight: 3\n"
           "    workers: 2\n"
           "  - name: books\n"
           "    format: text\n"
           "    paths: [books/*.txt]\n"
           "    weight: 1\n";
  }

  // Loads `body` and returns the error message it must produce.
  std::string error_of(const std::string& body,
                       std::vector<overlord::planner::config_override> sets = {}) {
    auto path = write_config(body);
    try {
      load_config(path, sets);
    } catch (const error& e) {
      CHECK(e.code() == errc::invalid_config);
      return e.what();
    }
    FAIL("config was accepted: " << body);
    return "";
  }
};

std::string replace(std::string text, const std::string& from,
                    const std::string& to) {
  auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("config loads a valid file", "[config]") {
  config_fixture f;
  auto config = load_config(f.write_config(config_fixture::valid_body()));
  CHECK(config.seed == 7);
  CHECK(config.sequence_length == 128);
  CHECK(config.global_rows() == 4);
  CHECK(config.bind == "127.0.0.1");
  CHECK(config.on_bad_input == overlord::planner::bad_input_policy::skip);
  CHECK(config.mix_by == overlord::planner::mix_unit::tokens);
  REQUIRE(config.sources.size() == 2);
  const auto& mail = config.sources[0];
  CHECK(mail.workers == 2);
  CHECK(mail.weight == 3);
  REQUIRE(mail.shards.size() == 2);
  CHECK(mail.shards[0] == (f.dir.path() / "mail/a.jsonl").string());
  CHECK(mail.shards[1] == (f.dir.path() / "mail/b.jsonl").string());
  CHECK(config.tokenizer == (f.dir.path() / "gpt2").string());
}

TEST_CASE("config set overrides by source name", "[config]") {
  config_fixture f;
  auto path = f.write_config(config_fixture::valid_body());
  auto config = load_config(path, {parse_override("sources.mail.workers=4"),
                                   parse_override("seed=99")});
  CHECK(config.sources[0].workers == 4);
  CHECK(config.seed == 99);
}

TEST_CASE("config rejects unknown key with line", "[config]") {
  config_fixture f;
  auto message = f.error_of(config_fixture::valid_body() + "sequence_lenght: 5\n");
  CHECK_THAT(message, Catch::Contains("job.yaml:17"));
  CHECK_THAT(message, Catch::Contains("sequence_lenght"));
  CHECK_THAT(message, Catch::Contains("unknown key"));
}

TEST_CASE("config rejects unknown source key", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "    workers: 2\n", "    wokers: 2\n"));
  CHECK_THAT(message, Catch::Contains("job.yaml:12"));
  CHECK_THAT(message, Catch::Contains("sources.mail.wokers"));
}

TEST_CASE("config rejects wrong type", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "sequence_length: 128", "sequence_length: long"));
  CHECK_THAT(message, Catch::Contains("job.yaml:2"));
  CHECK_THAT(message, Catch::Contains("sequence_length"));
  CHECK_THAT(message, Catch::Contains("expected integer"));
}

TEST_CASE("config names extra schedule keys", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(), "    weight: 3\n",
                                    "    weight: {stepwise: [[0, 1]], until: 5}\n"));
  CHECK_THAT(message, Catch::Contains("sources.mail.weight"));
  CHECK_THAT(message, Catch::Contains("got keys stepwise, until"));
}

TEST_CASE("config rejects non-scalar schedule name", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "sequence_length: 128",
                                    "sequence_length: {? [a]: 1}"));
  CHECK_THAT(message, Catch::Contains("sequence_length"));
  CHECK_THAT(message, Catch::Contains("expected string"));
}

TEST_CASE("config names global_rows in length check", "[config]") {
  config_fixture f;
  auto body = replace(config_fixture::valid_body(), "rows_per_rank: 2\n",
                      "global_rows: 4\n");
  body = replace(body, "sequence_length: 128",
                 "sequence_length: {draw: [[128, 1], [384, 1]]}");
  auto message = f.error_of(body);
  CHECK_THAT(message, Catch::Contains("length 384 does not divide the 256 tokens"));
  CHECK_THAT(message, Catch::Contains("global_rows / ranks"));
}

TEST_CASE("config rejects sequence length zero", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "sequence_length: 128", "sequence_length: 0"));
  CHECK_THAT(message, Catch::Contains("job.yaml:2"));
  CHECK_THAT(message, Catch::Contains("out of range"));
}

TEST_CASE("config rejects negative weight", "[config]") {
  config_fixture f;
  auto message = f.error_of(
      replace(config_fixture::valid_body(), "weight: 3", "weight: -1"));
  CHECK_THAT(message, Catch::Contains("job.yaml:11"));
  CHECK_THAT(message, Catch::Contains("sources.mail.weight"));
  CHECK_THAT(message, Catch::Contains(">= 0"));
}

TEST_CASE("config rejects all weights zero", "[config]") {
  config_fixture f;
  auto body = replace(config_fixture::valid_body(), "weight: 3", "weight: 0");
  body = replace(body, "weight: 1", "weight: 0");
  auto message = f.error_of(body);
  CHECK_THAT(message, Catch::Contains("all weights are zero"));
}

TEST_CASE("config rejects glob matching nothing", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "books/*.txt", "missing/*.txt"));
  CHECK_THAT(message, Catch::Contains("job.yaml:15"));
  CHECK_THAT(message, Catch::Contains("no file matches"));
  CHECK_THAT(message, Catch::Contains("missing/*.txt"));
}

TEST_CASE("config rejects missing tokenizer files", "[config]") {
  config_fixture f;
  auto message = f.error_of(
      replace(config_fixture::valid_body(), "tokenizer: gpt2", "tokenizer: nowhere"));
  CHECK_THAT(message, Catch::Contains("job.yaml:5"));
  CHECK_THAT(message, Catch::Contains("encoder.json not found"));
}

TEST_CASE("config rejects duplicate source names", "[config]") {
  config_fixture f;
  auto message = f.error_of(
      replace(config_fixture::valid_body(), "name: books", "name: mail"));
  CHECK_THAT(message, Catch::Contains("duplicate source name 'mail'"));
}

TEST_CASE("config rejects bad policy value", "[config]") {
  config_fixture f;
  auto message = f.error_of(config_fixture::valid_body() + "on_bad_input: ignore\n");
  CHECK_THAT(message, Catch::Contains("on_bad_input"));
  CHECK_THAT(message, Catch::Contains("use skip or quarantine or fail"));
}

TEST_CASE("config reports invalid YAML syntax", "[config]") {
  config_fixture f;
  auto message = f.error_of("seed: [1, 2\n");
  CHECK_THAT(message, Catch::Contains("job.yaml:"));
  CHECK_THAT(message, Catch::Contains("invalid YAML"));
}

TEST_CASE("config names the set flag in errors", "[config]") {
  config_fixture f;
  auto message = f.error_of(config_fixture::valid_body(),
                            {parse_override("sources.mail.weight=-2")});
  CHECK_THAT(message, Catch::Contains("--set sources.mail.weight=-2"));

  message = f.error_of(config_fixture::valid_body(),
                       {parse_override("sources.news.workers=2")});
  CHECK_THAT(message, Catch::Contains("no source named 'news'"));

  message = f.error_of(config_fixture::valid_body(),
                       {parse_override("sequence_length=0")});
  CHECK_THAT(message, Catch::Contains("--set sequence_length=0"));
}

TEST_CASE("config set lists valid keys", "[config]") {
  config_fixture f;
  auto message = f.error_of(config_fixture::valid_body(),
                            {parse_override("startup_prefetch=3")});
  CHECK_THAT(message, Catch::Contains("unknown key 'startup_prefetch'"));
  CHECK_THAT(message, Catch::Contains("startup_prefetch_steps"));

  message = f.error_of(config_fixture::valid_body(),
                       {parse_override("autoscale.speed=3")});
  CHECK_THAT(message, Catch::Contains(
                          "valid keys there are cpu_budget, enabled, headroom"));

  // A source's name addresses it, so it is not offered as a key to set.
  message = f.error_of(config_fixture::valid_body(),
                       {parse_override("sources.mail.wrkers=3")});
  CHECK_THAT(message, Catch::Contains("valid source keys are append_eos"));
  CHECK_THAT(message, !Catch::Contains(", name,"));
}

TEST_CASE("config override needs equals sign", "[config]") {
  CHECK_THROWS_WITH(parse_override("seed"), Catch::Contains("KEY=VALUE"));
}

TEST_CASE("config rejects text field on text source", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "    format: text\n",
                                    "    format: text\n    text_field: body\n"));
  CHECK_THAT(message, Catch::Contains("sources.books.text_field"));
}

TEST_CASE("config global rows divide by ranks", "[config]") {
  config_fixture f;
  auto body = replace(config_fixture::valid_body(), "rows_per_rank: 2",
                      "global_rows: 16");
  auto config = load_config(f.write_config(body));
  CHECK(config.rows_per_rank == 8);
  CHECK(config.global_rows() == 16);

  auto message = f.error_of(replace(body, "global_rows: 16", "global_rows: 15"));
  CHECK_THAT(message, Catch::Contains("job.yaml:3: global_rows"));
  CHECK_THAT(message, Catch::Contains("do not divide by 2 ranks"));

  message = f.error_of(body + "rows_per_rank: 4\n");
  CHECK_THAT(message, Catch::Contains("either rows_per_rank or global_rows"));
}

TEST_CASE("config topology sets ranks", "[config]") {
  config_fixture f;
  auto body = replace(config_fixture::valid_body(), "ranks: 2\n",
                      "topology: {dp: 4, tp: 8, pp: 2, cp: 2, "
                      "consumers: first_and_last_stages}\n");
  auto config = load_config(f.write_config(body));
  CHECK(config.ranks == 4);
  CHECK(config.topology.tp == 8);
  CHECK(config.topology.pp == 2);
  CHECK(config.topology.cp == 2);
  CHECK(config.topology.last_stage_consumes);

  auto message = f.error_of(replace(config_fixture::valid_body(), "ranks: 2\n",
                                    "ranks: 2\ntopology: {dp: 4}\n"));
  CHECK_THAT(message, Catch::Contains("ranks 2 differs from topology.dp 4"));

  message = f.error_of(replace(body, "sequence_length: 128", "sequence_length: 130"));
  CHECK_THAT(message, Catch::Contains("2 * cp = 4"));

  message = f.error_of(replace(body, "cp: 2", "sp: 2"));
  CHECK_THAT(message, Catch::Contains("topology.sp"));
}

TEST_CASE("config cost model and balancer", "[config]") {
  config_fixture f;
  auto body = config_fixture::valid_body() +
              "balancer: kk\n"
              "cost_model:\n"
              "  attention: row\n"
              "  linear: 2\n"
              "  quadratic: 0.001\n";
  auto config = load_config(f.write_config(body));
  CHECK(config.balancer == overlord::planner::balance_method::kk);
  CHECK(config.cost.masking ==
        overlord::planner::cost_model::attention::row);
  CHECK(config.cost.linear == 2);
  CHECK(config.cost.quadratic == 0.001);

  auto message = f.error_of(replace(body, "quadratic: 0.001", "quadratic: -1"));
  CHECK_THAT(message, Catch::Contains("cost_model.quadratic"));
  message = f.error_of(replace(body, "balancer: kk", "balancer: greedy"));
  CHECK_THAT(message, Catch::Contains("use best or lpt or kk or tokens or consecutive"));
}

TEST_CASE("config rejects unsafe shapes and names", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(), "name: books",
                                    "name: go:od"));
  CHECK_THAT(message, Catch::Contains("invalid name 'go:od'"));

  message = f.error_of(config_fixture::valid_body() +
                       "base_port: 6000\nplanner_port: 6001\n");
  CHECK_THAT(message, Catch::Contains("planner_port"));
  CHECK_THAT(message, Catch::Contains("port 6001 is also a rank's port"));

  message = f.error_of(replace(config_fixture::valid_body(),
                               "sequence_length: 128\nrows_per_rank: 2",
                               "sequence_length: 16777216\nrows_per_rank: 64"));
  CHECK_THAT(message, Catch::Contains("under 1024 MiB"));
}

TEST_CASE("config rejects duplicate keys", "[config]") {
  config_fixture f;
  auto message = f.error_of(config_fixture::valid_body() + "seed: 8\n");
  CHECK_THAT(message, Catch::Contains("job.yaml:17: seed: duplicate key"));

  message = f.error_of(replace(config_fixture::valid_body(), "    workers: 2\n",
                               "    workers: 2\n    workers: 3\n"));
  CHECK_THAT(message, Catch::Contains("sources.mail.workers: duplicate key"));
}

TEST_CASE("config names folders matched by glob", "[config]") {
  config_fixture f;
  std::filesystem::create_directories(f.dir.path() / "folder.jsonl");
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "paths: mail/*.jsonl", "paths: folder.jsonl"));
  CHECK_THAT(message, Catch::Contains("matches only 1 folder"));
}

TEST_CASE("config indexed source uses prefixes", "[config]") {
  config_fixture f;
  f.dir.write("tokens/b.idx", "");
  f.dir.write("tokens/b.bin", "");
  f.dir.write("tokens/a.idx", "");
  f.dir.write("tokens/a.bin", "");
  auto path = f.write_config(config_fixture::valid_body() +
                             "  - name: tokens\n"
                             "    format: indexed\n"
                             "    paths: tokens/*.idx\n"
                             "    append_eos: false\n");
  auto config = load_config(path);
  REQUIRE(config.sources.size() == 3);
  const auto& source = config.sources[2];
  CHECK(source.format == overlord::planner::source_format::indexed);
  CHECK(source.append_eos == false);
  CHECK(source.shards == std::vector<std::string>{
                             (f.dir.path() / "tokens" / "a").string(),
                             (f.dir.path() / "tokens" / "b").string()});
  CHECK(config.sources[0].append_eos == true);
}

TEST_CASE("config indexed source needs idx and bin", "[config]") {
  config_fixture f;
  f.dir.write("tokens/a.idx", "");
  f.dir.write("tokens/a.bin", "");
  f.dir.write("tokens/lonely.idx", "");
  f.dir.write("tokens/notes.txt", "");

  auto message = f.error_of(config_fixture::valid_body() +
                            "  - name: tokens\n"
                            "    format: indexed\n"
                            "    paths: tokens/*.idx\n");
  CHECK_THAT(message, Catch::Contains("sources.tokens.paths"));
  CHECK_THAT(message, Catch::Contains("lonely.idx' has no data file"));

  message = f.error_of(config_fixture::valid_body() +
                       "  - name: tokens\n"
                       "    format: indexed\n"
                       "    paths: tokens/*.txt\n");
  CHECK_THAT(message, Catch::Contains("notes.txt' is not a .idx file"));
}

TEST_CASE("config rejects append_eos on text sources", "[config]") {
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "    format: text\n",
                                    "    format: text\n    append_eos: true\n"));
  CHECK_THAT(message, Catch::Contains("sources.books.append_eos"));
}

TEST_CASE("config metrics port", "[config]") {
  config_fixture f;
  auto path =
      f.write_config(config_fixture::valid_body() + "metrics_port: 9400\n");
  CHECK(load_config(path, {}).metrics_port == 9400);
  CHECK(load_config(f.write_config(config_fixture::valid_body()), {})
            .metrics_port == 0);

  auto message = f.error_of(config_fixture::valid_body() +
                            "base_port: 6000\nmetrics_port: 6001\n");
  CHECK_THAT(message, Catch::Contains("metrics_port: port 6001 is also the "
                                      "planner's or a rank's port"));
  message = f.error_of(config_fixture::valid_body() +
                       "planner_port: 7070\nmetrics_port: 7070\n");
  CHECK_THAT(message, Catch::Contains("metrics_port"));
  message = f.error_of(config_fixture::valid_body() + "metrics_port: 70000\n");
  CHECK_THAT(message, Catch::Contains("metrics_port"));
}

TEST_CASE("config worker niceness", "[config]") {
  config_fixture f;
  CHECK(load_config(f.write_config(config_fixture::valid_body()), {})
            .worker_nice == 10);
  auto path = f.write_config(config_fixture::valid_body() + "worker_nice: 0\n");
  CHECK(load_config(path, {}).worker_nice == 0);

  auto message = f.error_of(config_fixture::valid_body() + "worker_nice: 20\n");
  CHECK_THAT(message, Catch::Contains("worker_nice"));
  message = f.error_of(config_fixture::valid_body() + "worker_nice: -1\n");
  CHECK_THAT(message, Catch::Contains("worker_nice"));
}

TEST_CASE("config startup prefetch steps", "[config]") {
  config_fixture f;
  CHECK(load_config(f.write_config(config_fixture::valid_body()), {})
            .startup_prefetch_steps == 0);
  auto path = f.write_config(config_fixture::valid_body() +
                             "startup_prefetch_steps: 4\n");
  CHECK(load_config(path, {}).startup_prefetch_steps == 4);

  // plan_ahead bounds it wherever either value comes from, and the
  // message names a --set flag that wrote plan_ahead.
  auto message = f.error_of(config_fixture::valid_body() +
                            "startup_prefetch_steps: 5\n");
  CHECK_THAT(message, Catch::Contains("startup_prefetch_steps"));
  CHECK_THAT(message, Catch::Contains("use 0 to 4 (plan_ahead)"));
  message = f.error_of(config_fixture::valid_body() +
                           "startup_prefetch_steps: 3\n",
                       {parse_override("plan_ahead=2")});
  CHECK_THAT(message,
             Catch::Contains("use 0 to 2 (plan_ahead, from --set plan_ahead=2)"));
  path = f.write_config(config_fixture::valid_body() +
                        "startup_prefetch_steps: 6\nplan_ahead: 8\n");
  CHECK(load_config(path, {}).startup_prefetch_steps == 6);

  message = f.error_of(config_fixture::valid_body() +
                       "startup_prefetch_steps: -1\n");
  CHECK_THAT(message, Catch::Contains("value -1 is out of range; use 0 to 4"));
}

namespace {

// valid_body plus a WebDataset source with `keys` (indented lines).
std::string with_images(const std::string& keys) {
  return config_fixture::valid_body() +
         "  - name: pictures\n"
         "    format: webdataset\n"
         "    paths: images/*.tar\n" +
         keys;
}

}  // namespace

TEST_CASE("config loads a webdataset source", "[config]") {
  config_fixture f;
  f.dir.write("images/a.tar", "");
  auto config = load_config(f.write_config(
      "on_bad_input: quarantine\nimage_token_id: 60000\n" +
      replace(with_images("    caption_field: alt\n"
                          "    image_max_pixels: 1024\n"
                          "    patch_size: 8\n"
                          "    image_mean: [0.5, 0.4, 0.3]\n"
                          "    image_std: [0.2, 0.25, 0.5]\n"),
              "sequence_length: 128", "sequence_length: 64")));
  REQUIRE(config.sources.size() == 3);
  const auto& source = config.sources[2];
  CHECK(source.format == overlord::planner::source_format::webdataset);
  CHECK(source.caption_field == "alt");
  CHECK(source.image_max_pixels == 1024);
  CHECK(source.patch_size == 8);
  CHECK(source.image_mean[2] == Approx(0.3));
  CHECK(source.image_std[1] == Approx(0.25));
  CHECK(config.image_token_id == 60000);
  CHECK(config.on_bad_input == overlord::planner::bad_input_policy::quarantine);
  CHECK(overlord::planner::max_image_positions(source) == 16);
}

TEST_CASE("config webdataset defaults", "[config]") {
  config_fixture f;
  f.dir.write("images/a.tar", "");
  auto config = load_config(f.write_config(replace(
      with_images(""), "sequence_length: 128", "sequence_length: 512")));
  const auto& source = config.sources[2];
  CHECK(source.caption_field == "caption");
  CHECK(source.image_max_pixels == 224 * 224);
  CHECK(source.patch_size == 14);
  CHECK(config.image_token_id == 50257);
  CHECK(overlord::planner::max_image_positions(source) == 256);
}

TEST_CASE("config rejects bad webdataset keys", "[config]") {
  config_fixture f;
  f.dir.write("images/a.tar", "");
  // The default image takes up to 256 positions, more than 128 - 2.
  CHECK_THAT(f.error_of(with_images("")),
             Catch::Contains("sources.pictures.image_max_pixels: an image may "
                             "take 256 positions") &&
                 Catch::Contains("exceeds sequence_length 128"));
  CHECK_THAT(f.error_of(with_images("    image_max_pixels: 8192\n"
                                    "    patch_size: 8\n")),
             Catch::Contains("job.yaml:") &&
                 Catch::Contains("may take 128 positions"));
  CHECK_THAT(f.error_of(with_images("    patch_size: 16\n"
                                    "    image_max_pixels: 100\n")),
             Catch::Contains("sources.pictures.image_max_pixels: 100 pixels "
                             "hold less than one patch of 16x16"));
  CHECK_THAT(f.error_of(with_images("    image_max_pixels: 1024\n"
                                    "    image_mean: [0.5, 0.5]\n")),
             Catch::Contains("sources.pictures.image_mean: expected a list of 3 "
                             "numbers"));
  CHECK_THAT(f.error_of(with_images("    image_max_pixels: 1024\n"
                                    "    image_std: [0.5, 0, 0.5]\n")),
             Catch::Contains("sources.pictures.image_std: each value must be a "
                             "finite number > 0"));
  CHECK_THAT(f.error_of(with_images("    image_max_pixels: 1024\n"
                                    "    caption_field: \"\"\n")),
             Catch::Contains("sources.pictures.caption_field: empty field name"));
  CHECK_THAT(f.error_of(replace(config_fixture::valid_body(),
                                "    workers: 2\n",
                                "    workers: 2\n    patch_size: 14\n")),
             Catch::Contains("sources.mail.patch_size: only webdataset "
                             "sources have this key"));
  CHECK_THAT(f.error_of("image_token_id: 50256\n" + config_fixture::valid_body()),
             Catch::Contains("image_token_id: 50256 is GPT-2's end-of-text "
                             "token"));
  CHECK_THAT(f.error_of("on_bad_input: drop\n" + config_fixture::valid_body()),
             Catch::Contains("on_bad_input: unknown value 'drop'; use skip or "
                             "quarantine or fail"));
}

TEST_CASE("config rejects list as key", "[config]") {
  config_fixture f;
  auto top = f.error_of("? [seed]\n: 7\n");
  CHECK(top.find("job.yaml:1: (key): expected a key name, got a list") !=
        std::string::npos);
  auto in_source = f.error_of(
      "tokenizer: gpt2\n"
      "sources:\n"
      "  - {name: mail, format: jsonl, paths: mail/*.jsonl, [weight]: 2}\n");
  CHECK(in_source.find("job.yaml:3: sources.mail.(key): expected a key name, "
                       "got a list") != std::string::npos);
}

TEST_CASE("config rejects over-long tokenizer name", "[config]") {
  // A file name over NAME_MAX (255 bytes) makes stat fail with
  // ENAMETOOLONG instead of ENOENT.
  config_fixture f;
  auto message = f.error_of(replace(config_fixture::valid_body(),
                                    "tokenizer: gpt2",
                                    "tokenizer: " + std::string(300, 'x')));
  CHECK_THAT(message, Catch::Contains("job.yaml:5: tokenizer: file"));
  CHECK_THAT(message, Catch::Contains("encoder.json not found"));
}

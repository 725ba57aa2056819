#include <catch2/catch.hpp>

#include <cstring>

#include "common/error.hpp"
#include "transport/batch_builder.hpp"
#include "transport/payload_wire.hpp"
#include "transport/recycling_allocator.hpp"
#include "transport/wire.hpp"

using namespace overlord;

namespace {

constexpr int32_t image_token = 50257;
constexpr int32_t eos = 50256;

// One row of 16: a 3-token text document, then an image-text document of
// 4 image positions, 2 caption tokens and EOS, then padding.
struct image_row {
  planner::rank_plan plan;
  std::vector<std::vector<int32_t>> payloads;
  sources::decoded_image image;
  transport::batch_layout layout;

  image_row() {
    planner::piece text;
    text.key = "sotu:1";
    text.length = text.document_tokens = 3;
    planner::piece picture;
    picture.source = 1;
    picture.sequence = 9;
    picture.key = "images-0000.tar:00000007";
    picture.length = picture.document_tokens = 7;
    picture.patches = 4;
    picture.atomic = true;
    plan.rows = {{text, picture}};
    payloads = {{10, 11, eos},
                {image_token, image_token, image_token, image_token, 30, 31, eos}};
    image.height = 2;
    image.width = 3;
    image.channels = 3;
    image.patches = 4;
    for (int i = 0; i < 18; ++i)
      image.pixels.push_back(static_cast<uint8_t>(10 * i));
    layout.sequence_length = 16;
    layout.pad_id = eos;
    layout.source_names = {"sotu", "images"};
  }

  transport::packed_rows lay_out() const {
    return transport::lay_out_rows(
        plan, layout, [&](size_t, size_t i) { return payloads[i].data(); },
        [&](size_t, size_t i) { return i == 1 ? &image : nullptr; });
  }
};

const wire::Batch* batch_of(const flatbuffers::DetachedBuffer& buffer) {
  const auto* reply = transport::verify_reply(buffer.data(), buffer.size());
  REQUIRE(reply);
  REQUIRE(reply->body_as_Batch());
  return reply->body_as_Batch();
}

}  // namespace

TEST_CASE("image positions carry no loss", "[image_batch]") {
  image_row fixture;
  auto rows = fixture.lay_out();
  const std::vector<int32_t> labels = {11, eos, -100, -100, -100, -100, -100,
                                       31, eos, -100};
  const std::vector<uint8_t> mask = {1, 1, 0, 0, 0, 0, 0, 1, 1, 0};
  for (size_t i = 0; i < labels.size(); ++i) {
    INFO("position " << i);
    CHECK(rows.labels[i] == labels[i]);
    CHECK(rows.loss_mask[i] == mask[i]);
  }
  CHECK(rows.tokens[3] == image_token);
  CHECK(rows.tokens[7] == 30);
  REQUIRE(rows.images.size() == 1);
  CHECK(rows.images[0].row_offset == 3);
}

TEST_CASE("batch carries the image", "[image_batch]") {
  image_row fixture;
  auto rows = fixture.lay_out();
  auto buffer = transport::serialize_batch(fixture.plan, fixture.layout, rows, 0);
  const auto* batch = batch_of(buffer);
  REQUIRE(batch->images());
  REQUIRE(batch->images()->size() == 1);
  const auto* image = batch->images()->Get(0);
  CHECK(image->row() == 0);
  CHECK(image->row_offset() == 3);
  CHECK(image->patches() == 4);
  CHECK(image->height() == 2);
  CHECK(image->width() == 3);
  CHECK(image->channels() == 3);
  CHECK(image->source() == 1);
  CHECK(image->key()->str() == "images-0000.tar:00000007");
  REQUIRE(image->pixels()->size() == 18);
  CHECK(image->pixels()->Get(17) == 170);
  REQUIRE(image->mean()->size() == 3);
  REQUIRE(image->std()->size() == 3);
  CHECK(transport::check_batch_layout(*batch).empty());

  // The pixels count in the digest.
  auto changed = fixture;
  changed.image.pixels[5] += 1;
  auto other = transport::serialize_batch(changed.plan, changed.layout,
                                          changed.lay_out(), 0);
  CHECK(transport::batch_digest(*batch) !=
        transport::batch_digest(*batch_of(other)));
}

TEST_CASE("context-parallel batches keep overlapping images", "[image_batch]") {
  image_row fixture;
  fixture.layout.cp_size = 2;
  auto rows = fixture.lay_out();
  // Chunks of 4 positions: cp rank 0 receives chunks 0 and 3 (positions
  // 0-3 and 12-15), cp rank 1 chunks 1 and 2 (4-11). The image covers 3-6.
  for (uint32_t cp_rank = 0; cp_rank < 2; ++cp_rank) {
    auto buffer = transport::serialize_batch(fixture.plan, fixture.layout,
                                             rows, cp_rank);
    const auto* batch = batch_of(buffer);
    REQUIRE(batch->images());
    CHECK(batch->images()->size() == 1);
    CHECK(batch->images()->Get(0)->row_offset() == 3);
  }

  // Moved to positions 8-11, the image belongs to cp rank 1 only.
  fixture.plan.rows[0][0].length = fixture.plan.rows[0][0].document_tokens = 8;
  fixture.payloads[0] = {1, 2, 3, 4, 5, 6, 7, eos};
  rows = fixture.lay_out();
  CHECK(batch_of(transport::serialize_batch(fixture.plan, fixture.layout, rows, 0))
            ->images()->size() == 0);
  CHECK(batch_of(transport::serialize_batch(fixture.plan, fixture.layout, rows, 1))
            ->images()->size() == 1);
}

TEST_CASE("missing image stops the build", "[image_batch]") {
  image_row fixture;
  CHECK_THROWS_AS(transport::lay_out_rows(
                      fixture.plan, fixture.layout,
                      [&](size_t, size_t i) { return fixture.payloads[i].data(); },
                      [&](size_t, size_t) { return nullptr; }),
                  error);
}

TEST_CASE("payload reply carries the image", "[image_batch]") {
  image_row fixture;
  const auto& tokens = fixture.payloads[1];
  auto message = transport::encode_payload_reply(5, 0, "", tokens.data(),
                                                 tokens.size(), &fixture.image);
  auto reply = transport::decode_payload_reply(message.data(), message.size());
  REQUIRE(reply);
  CHECK(reply->tokens == tokens);
  REQUIRE(reply->image);
  CHECK(reply->image->patches == 4);
  CHECK(reply->image->height == 2);
  CHECK(reply->image->width == 3);
  CHECK(reply->image->pixels == fixture.image.pixels);

  auto plain = transport::encode_payload_reply(6, 0, "", tokens.data(),
                                               tokens.size());
  auto text = transport::decode_payload_reply(plain.data(), plain.size());
  REQUIRE(text);
  CHECK_FALSE(text->image);
}

TEST_CASE("normalise_image applies mean and std per channel", "[image_batch]") {
  image_row fixture;
  fixture.image.mean = {0.5f, 0.25f, 0.0f};
  fixture.image.std = {0.5f, 0.25f, 2.0f};
  auto buffer = transport::serialize_batch(fixture.plan, fixture.layout,
                                           fixture.lay_out(), 0);
  const auto* image = batch_of(buffer)->images()->Get(0);
  std::vector<float> values(18);
  transport::normalise_image(*image, values.data());
  // Planes of 6 pixels with values 0, 10, ..., 170.
  CHECK(values[0] == Approx((0.0f - 0.5f) / 0.5f));
  CHECK(values[5] == Approx((50 / 255.0f - 0.5f) / 0.5f));
  CHECK(values[6] == Approx((60 / 255.0f - 0.25f) / 0.25f));
  CHECK(values[17] == Approx((170 / 255.0f - 0.0f) / 2.0f));
}

namespace {

// Returns check_batch_layout's message for a batch of one row of length 0
// (so every token array is empty and valid) that contains one image with
// these fields.
std::string check_one_image(uint32_t height, uint32_t width, uint32_t channels,
                            const std::vector<uint8_t>& pixels,
                            const std::vector<float>& mean,
                            const std::vector<float>& deviation) {
  flatbuffers::FlatBufferBuilder builder;
  auto entry = wire::CreateImage(
      builder, 0, 3, 1, height, width, channels, builder.CreateVector(pixels),
      1, 0, builder.CreateVector(mean), builder.CreateVector(deviation));
  auto images = builder.CreateVector(&entry, 1);
  auto splits = builder.CreateVector(std::vector<uint32_t>{0, 0});
  wire::BatchBuilder batch(builder);
  batch.add_rows(1);
  batch.add_sequence_length(16);
  batch.add_row_splits(splits);
  batch.add_images(images);
  builder.Finish(batch.Finish());
  return transport::check_batch_layout(
      *flatbuffers::GetRoot<wire::Batch>(builder.GetBufferPointer()));
}

}  // namespace

TEST_CASE("layout check rejects malformed images", "[image_batch]") {
  const std::vector<float> three(3, 0.5f);
  const std::vector<float> four(4, 0.5f);
  std::vector<uint8_t> pixels(18, 7);
  CHECK(check_one_image(2, 3, 3, pixels, three, three).empty());
  CHECK_THAT(check_one_image(2, 3, 3, std::vector<uint8_t>(17), three, three),
             Catch::Matchers::Contains("pixel values"));
  CHECK_THAT(check_one_image(2, 3, 3, pixels, three, {0.5f, 0.0f, 0.5f}),
             Catch::Matchers::Contains("expected > 0"));
  CHECK_THAT(check_one_image(2, 3, 3, pixels, four, three),
             Catch::Matchers::Contains("one mean and one std per channel"));
  // channels * height * width wraps around to 0 in 64 bits in the next two
  // cases, which would match an empty pixel vector.
  CHECK_THAT(check_one_image(1u << 31, 1u << 31, 4, {}, four, four),
             Catch::Matchers::Contains("is too large"));
  CHECK_THAT(check_one_image(1u << 24, 1u << 24, 1u << 16, {}, three, three),
             Catch::Matchers::Contains("channels, expected 1 to 4"));
}

TEST_CASE("recycling allocator reuses freed blocks",
          "[image_batch][allocator]") {
  CHECK(transport::recycling_allocator::block_size(1) == 64 << 10);
  CHECK(transport::recycling_allocator::block_size((64 << 10) + 1) == 128 << 10);
  CHECK(transport::recycling_allocator::block_size((1 << 20) + 1) == 2 << 20);

  transport::recycling_allocator allocator(size_t{8} << 20, 2);
  uint8_t* first = allocator.allocate(3 << 20);
  allocator.deallocate(first, 3 << 20);
  CHECK(allocator.stats().kept_blocks == 1);
  // A new block has a quarter more room, rounded up to whole MiB.
  CHECK(allocator.stats().kept_bytes == size_t{4} << 20);

  // A request of similar size gets the kept block back.
  uint8_t* again = allocator.allocate((3 << 20) - 100);
  CHECK(again == first);
  CHECK(allocator.stats().reused == 1);
  CHECK(allocator.stats().kept_blocks == 0);

  // A request of a quarter of the block does not take it.
  allocator.deallocate(again, 3 << 20);
  uint8_t* small = allocator.allocate(1 << 20);
  CHECK(small != first);
  CHECK(allocator.stats().reused == 1);
  allocator.deallocate(small, 1 << 20);
  CHECK(allocator.stats().kept_blocks == 2);
  CHECK(allocator.stats().allocations == 3);
}

TEST_CASE("recycling allocator drops its oldest blocks",
          "[image_batch][allocator]") {
  transport::recycling_allocator allocator(size_t{8} << 20, 2);
  uint8_t* oldest = allocator.allocate(3 << 20);
  uint8_t* newer = allocator.allocate(3 << 20);
  uint8_t* last = allocator.allocate(1 << 20);
  allocator.deallocate(oldest, 3 << 20);
  allocator.deallocate(newer, 3 << 20);
  CHECK(allocator.stats().kept_bytes == size_t{8} << 20);

  // Two blocks are kept already, so the oldest one goes.
  allocator.deallocate(last, 1 << 20);
  CHECK(allocator.stats().kept_blocks == 2);
  CHECK(allocator.stats().kept_bytes == size_t{6} << 20);
  uint8_t* reused = allocator.allocate(3 << 20);
  CHECK(reused == newer);

  // A block larger than the byte limit is never kept.
  uint8_t* huge = allocator.allocate(8 << 20);
  allocator.deallocate(huge, 8 << 20);
  CHECK(allocator.stats().kept_blocks == 1);
  allocator.deallocate(reused, 3 << 20);
}

TEST_CASE("recycling allocator leaves small blocks to malloc",
          "[image_batch][allocator]") {
  transport::recycling_allocator allocator(size_t{64} << 20, 4,
                                           size_t{1} << 20);
  uint8_t* small = allocator.allocate(1000);
  allocator.deallocate(small, 1000);
  CHECK(allocator.stats().kept_blocks == 0);

  uint8_t* large = allocator.allocate(2 << 20);
  allocator.deallocate(large, 2 << 20);
  CHECK(allocator.stats().kept_blocks == 1);
  CHECK(allocator.stats().allocations == 2);

  // A builder that grows from 1 KiB past the floor, and is destroyed
  // without releasing its buffer, frees every block it took.
  {
    flatbuffers::FlatBufferBuilder builder(1024, &allocator);
    const std::vector<uint8_t> bytes(3 << 20, 7);
    builder.CreateVector(bytes);
  }
  CHECK(allocator.stats().kept_blocks >= 1);
  CHECK(allocator.stats().kept_bytes <= size_t{64} << 20);
}

TEST_CASE("batches built in recycled blocks are byte-identical",
          "[image_batch][allocator]") {
  image_row row;
  const auto rows = row.lay_out();
  const auto expected = transport::serialize_batch(row.plan, row.layout, rows, 0);
  const std::vector<uint8_t> expected_bytes(expected.data(),
                                            expected.data() + expected.size());

  transport::recycling_allocator allocator(size_t{64} << 20, 4);
  for (int round = 0; round < 3; ++round) {
    // Fill the whole block that the batch reuses with a marker byte.
    uint8_t* dirty = allocator.allocate(expected.size());
    const auto kept_before = allocator.stats().kept_bytes;
    allocator.deallocate(dirty, expected.size());
    const size_t capacity = allocator.stats().kept_bytes - kept_before;
    REQUIRE(capacity >= expected.size());
    std::memset(dirty, 0xA5, capacity);

    auto built =
        transport::serialize_batch(row.plan, row.layout, rows, 0, &allocator);
    CHECK(std::vector<uint8_t>(built.data(), built.data() + built.size()) ==
          expected_bytes);
  }
  CHECK(allocator.stats().reused >= 3);
}

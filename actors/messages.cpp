#include "actors/messages.hpp"

namespace overlord::actors {

void add_message_types(caf::actor_system_config& config) {
  config.add_message_type<node_info>("node_info");
  config.add_message_type<stream_position>("stream_position");
  config.add_message_type<rank_asset>("rank_asset");
  config.add_message_type<std::vector<rank_asset>>("rank_asset_list");
  config.add_message_type<tokenized_document>("tokenized_document");
  config.add_message_type<shard_output>("shard_output");
  config.add_message_type<planner::document_meta>("document_meta");
  config.add_message_type<std::vector<planner::document_meta>>(
      "document_meta_list");
  config.add_message_type<planner::piece>("piece");
  config.add_message_type<planner::rank_plan>("rank_plan");
  config.add_message_type<planner::job_config>("job_config");
  config.add_message_type<std::vector<int32_t>>("token_list");
  config.add_message_type<std::vector<caf::actor>>("actor_list");
  config.add_message_type<std::vector<std::string>>("string_list");
  config.add_message_type<std::vector<std::pair<std::string, double>>>(
      "weight_list");
  config.add_message_type<counters>("counters");
}

}  // namespace overlord::actors

"""The channel layer of Redis mode on a Redis Cluster: channels-redis' pub/sub layer over the
cluster's masters.

A cluster passes every PUBLISH on to all its nodes, so a subscriber on any master hears what is
published on any other. channels-redis spreads its channels over the hosts it is given
(consistent hashing), so each master carries its share of the subscriptions and publishes. The
masters are asked of the cluster when the layer is made, and sorted, so that every process
spreads the channels alike.
"""

from __future__ import annotations

import logging
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

from streaming.redis_client import cluster_hosts, node_url

log = logging.getLogger(__name__)


class ClusterPubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, cluster_url: str, **kwargs: Any) -> None:
        try:
            hosts = cluster_hosts(cluster_url)
        except Exception:
            # The cluster is away as this process starts: the node named reaches every
            # subscriber too, through the cluster's own passing on.
            log.exception("could not list the cluster's masters; publishing through one node")
            hosts = [node_url(cluster_url)]
        super().__init__(*args, hosts=hosts, **kwargs)

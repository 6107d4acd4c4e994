#!/usr/bin/python3
"""Creates the topics of config/kafka/topics.txt, each with its .dlq, on the
broker given as the first argument.  Existing topics are left alone, so the
script is safe to run on every start."""

import sys
import time

from confluent_kafka.admin import AdminClient, NewTopic


def main():
    brokers, listing = sys.argv[1], sys.argv[2]
    wanted = []
    with open(listing) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            wanted.append(NewTopic(line[0], int(line[1]), 1))
            wanted.append(NewTopic(line[0] + ".dlq", 1, 1))

    admin = AdminClient({"bootstrap.servers": brokers})
    deadline = time.time() + 60
    while True:
        try:
            have = admin.list_topics(timeout=5).topics
            break
        except Exception as e:  # broker still starting
            if time.time() > deadline:
                sys.exit("kafka-topics: broker not reachable: %s" % e)
            time.sleep(0.5)

    todo = [t for t in wanted if t.topic not in have]
    if not todo:
        return
    for topic, fut in admin.create_topics(todo).items():
        try:
            fut.result()
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                sys.exit("kafka-topics: %s: %s" % (topic, e))


if __name__ == "__main__":
    main()

#!/bin/sh
# Regenerates the Strimzi CRDs that tests/unit/test_deploy.py validates deploy/k8s against.
# They are the output of Strimzi's own CrdGenerator run on the released api jar of the
# version pinned in pom.xml (Maven Central), as Strimzi's build makes its install files
# (api/pom.xml, execution generate-crd-co-install-v1). Needs Maven and Java 21 or newer
# (JAVA=/path/to/java); the tests need neither: they read the files committed here.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
java=${JAVA:-java}
libs=$(mktemp -d)
trap 'rm -rf "$libs"' EXIT
mvn --quiet --batch-mode -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs"
"$java" -cp "$libs/*" io.strimzi.crdgenerator.CrdGenerator \
    --label strimzi.io/crd-install:true --crd-api-version v1 --yaml \
    io.strimzi.api.kafka.model.kafka.Kafka="$here/040-Crd-kafka.yaml" \
    io.strimzi.api.kafka.model.topic.KafkaTopic="$here/043-Crd-kafkatopic.yaml" \
    io.strimzi.api.kafka.model.nodepool.KafkaNodePool="$here/045-Crd-kafkanodepool.yaml"

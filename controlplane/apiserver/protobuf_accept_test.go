package apiserver

import "testing"

// TestPrefersProtobuf checks the Accept headers real clients send.
func TestPrefersProtobuf(t *testing.T) {
	for accept, want := range map[string]bool{
		"application/vnd.kubernetes.protobuf, */*":             true, // client-go, ContentType protobuf
		"application/vnd.kubernetes.protobuf,application/json": true, // client-go typed clients' default
		"application/vnd.kubernetes.protobuf;stream=watch":     true,
		"application/json, */*":                                false,
		"application/json":                                     false,
		"":                                                     false,
		"application/json;q=0.5,application/vnd.kubernetes.protobuf":                                       true,
		"application/vnd.kubernetes.protobuf;q=0.5,application/json":                                       false,
		"application/vnd.kubernetes.protobuf;q=0":                                                          false,
		"application/json;q=0.9,application/cbor;q=1":                                                      false, // dynamic client with CBOR
		"application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json": false,
		"application/vnd.kubernetes.protobuf;stream=other":                                                 false,
	} {
		if got := prefersProtobuf(accept); got != want {
			t.Errorf("prefersProtobuf(%q) = %v, want %v", accept, got, want)
		}
	}
}

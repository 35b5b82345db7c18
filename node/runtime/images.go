package runtime

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Images gives the runtime an image's unpacked layers and config. node/images
// satisfies it; the runtime never reads image content by any other way, so the
// image store can change without touching the runtime.
type Images interface {
	// Resolve returns the image's id ("sha256:<config digest>"), the directories of its
	// unpacked layers, lowest first (overlayfs lowerdirs), and its OCI config.
	Resolve(ref string) (id string, layers []string, config *v1.ConfigFile, err error)
}

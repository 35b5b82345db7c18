// Package kubectli18n keeps the bundled kubectl's translations from loading
// in processes that are not `navarch kubectl`.
//
// kubectl's command packages translate their help texts in package-level
// variables, so the first of them to initialise loads and parses the
// translation catalogues: about 4 MB of allocations and 15 ms of CPU in
// every start of the binary, including each container's shim and each
// container init that the built-in runtime re-executes. kubectl offers
// i18n.SetLoadTranslationsFunc for replacing that loader, to be called
// from an init function before any translation happens; this package's
// import path sorts before k8s.io/kubectl's, so Go initialises it first.
package kubectli18n

import (
	"os"

	"k8s.io/kubectl/pkg/util/i18n"
)

// init is the one place the loader can be replaced: it must run before
// kubectl's package variables are initialised (see the package comment).
func init() {
	_ = i18n.SetLoadTranslationsFunc(func() error {
		if len(os.Args) > 1 && os.Args[1] == "kubectl" {
			return i18n.LoadTranslations("kubectl", nil)
		}
		return nil
	})
}

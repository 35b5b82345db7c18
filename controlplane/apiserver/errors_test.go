package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// TestStatusErrorOfCancelledRequests checks that abandoned requests are not
// reported as internal errors (500, logged at error level) but as timeouts.
func TestStatusErrorOfCancelledRequests(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int32
	}{
		{fmt.Errorf("create x: %w", context.Canceled), http.StatusGatewayTimeout},
		{fmt.Errorf("get x: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{errors.New("etcdserver: request cancelled"), http.StatusGatewayTimeout}, // the member is stopping
		{fmt.Errorf("create x: %w", rpctypes.ErrGRPCNoSpace), http.StatusInternalServerError},
		{errors.New("disk on fire"), http.StatusInternalServerError},
	} {
		if got := statusError(tc.err, nil, "x").ErrStatus.Code; got != tc.code {
			t.Errorf("statusError(%v): code %d, want %d", tc.err, got, tc.code)
		}
	}
}

package openapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/resource"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/openapi3"
	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/controlplane/apiserver/openapi"
	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/apps"
	"github.com/navarch/navarch/controlplane/registry/core"
)

func serve(t *testing.T) (*httptest.Server, *openapi.Documents) {
	var resources []*registry.Resource
	resources = append(resources, core.Resources()...)
	resources = append(resources, apps.Resources()...)
	docs, err := openapi.New(resources)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/openapi/v2", docs.ServeV2)
	mux.HandleFunc("/openapi/v3", docs.ServeV3)
	mux.HandleFunc("/openapi/v3/", docs.ServeV3)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs, docs
}

// TestKubectlFindsServerSideFieldValidation runs the check kubectl makes
// before it relies on fieldValidation=Strict instead of client-side validation.
func TestKubectlFindsServerSideFieldValidation(t *testing.T) {
	hs, _ := serve(t)
	dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	root := openapi3.NewRoot(dc.OpenAPIV3())
	doc, err := root.GVSpec(schema.GroupVersion{Group: "apps", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range doc.Paths.Paths {
		if p.Patch == nil {
			continue
		}
		var gvk map[string]string
		if p.Patch.Extensions.GetObject("x-kubernetes-group-version-kind", &gvk) != nil || gvk["kind"] != "Deployment" {
			continue
		}
		for _, param := range p.Patch.Parameters {
			if param.Name == string(resource.QueryParamFieldValidation) && param.In == "query" {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("no PATCH operation for apps/v1 Deployment with a fieldValidation query parameter")
	}
	// kubectl explain deployment.spec.strategy follows spec -> strategy.
	deploy := doc.Components.Schemas["io.k8s.api.apps.v1.Deployment"]
	if deploy == nil {
		t.Fatal("no Deployment schema")
	}
	specRef := deploy.Properties["spec"].AllOf[0].Ref.String()
	spec := doc.Components.Schemas[strings.TrimPrefix(specRef, "#/components/schemas/")]
	strategy, ok := spec.Properties["strategy"]
	if !ok || !strings.Contains(strategy.Description, "strategy") {
		t.Fatalf("DeploymentSpec.strategy: %+v", strategy.Description)
	}
}

func TestV2ProtobufDecodes(t *testing.T) {
	hs, _ := serve(t)
	req, _ := http.NewRequest("GET", hs.URL+"/openapi/v2", nil)
	req.Header.Set("Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf strings.Builder
	data := make([]byte, 1<<20)
	for {
		n, err := resp.Body.Read(data)
		buf.Write(data[:n])
		if err != nil {
			break
		}
	}
	doc := &openapi_v2.Document{}
	if err := proto.Unmarshal([]byte(buf.String()), doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range doc.GetDefinitions().GetAdditionalProperties() {
		if d.Name == "io.k8s.api.core.v1.Pod" {
			found = true
		}
	}
	if !found {
		t.Fatal("v2 protobuf has no Pod definition")
	}
	// The JSON form names the patch strategy of containers.
	resp2, _ := http.Get(hs.URL + "/openapi/v2")
	var v2 map[string]interface{}
	json.NewDecoder(resp2.Body).Decode(&v2)
	resp2.Body.Close()
	containers := v2["definitions"].(map[string]interface{})["io.k8s.api.core.v1.PodSpec"].(map[string]interface{})["properties"].(map[string]interface{})["containers"].(map[string]interface{})
	if containers["x-kubernetes-patch-merge-key"] != "name" {
		t.Fatalf("PodSpec.containers patch merge key: %v", containers["x-kubernetes-patch-merge-key"])
	}
}

func BenchmarkNew(b *testing.B) {
	var resources []*registry.Resource
	resources = append(resources, core.Resources()...)
	resources = append(resources, apps.Resources()...)
	for i := 0; i < b.N; i++ {
		if _, err := openapi.New(resources); err != nil {
			b.Fatal(err)
		}
	}
}

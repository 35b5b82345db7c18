// Package openapi builds the OpenAPI v2 and v3 documents of the served
// resources by reflection over their Go types, with descriptions from the
// types' SwaggerDoc methods, and serves them as kubectl expects: v2 as JSON
// or protobuf at /openapi/v2, v3 as an index at /openapi/v3 and one document
// per group-version at /openapi/v3/apis/GROUP/VERSION.
package openapi

import (
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// schema is one JSON schema object, kept as a map so that both document
// versions can share it and marshal it as is.
type schema = map[string]interface{}

// builder collects the definitions reachable from a set of types.
type builder struct {
	v3   bool   // OpenAPI 3 flavours (int-or-string, refs under components)
	ref  string // "#/definitions/" or "#/components/schemas/"
	defs map[string]schema
}

func newBuilder(v3 bool) *builder {
	b := &builder{v3: v3, ref: "#/definitions/", defs: map[string]schema{}}
	if v3 {
		b.ref = "#/components/schemas/"
	}
	return b
}

var (
	timeType       = reflect.TypeOf(metav1.Time{})
	microTimeType  = reflect.TypeOf(metav1.MicroTime{})
	durationType   = reflect.TypeOf(metav1.Duration{})
	quantityType   = reflect.TypeOf(resource.Quantity{})
	intOrStrType   = reflect.TypeOf(intstr.IntOrString{})
	rawExtType     = reflect.TypeOf(runtime.RawExtension{})
	fieldsV1Type   = reflect.TypeOf(metav1.FieldsV1{})
	swaggerDocType = reflect.TypeOf((*interface{ SwaggerDoc() map[string]string })(nil)).Elem()
)

// definitionName names a type as upstream does: the Go package path with
// its domain reversed, then the type name (io.k8s.api.apps.v1.Deployment).
func definitionName(t reflect.Type) string {
	pkg := t.PkgPath()
	parts := strings.SplitN(pkg, "/", 2)
	domain := strings.Split(parts[0], ".")
	for i, j := 0, len(domain)-1; i < j; i, j = i+1, j-1 {
		domain[i], domain[j] = domain[j], domain[i]
	}
	name := strings.Join(domain, ".")
	if len(parts) == 2 {
		name += "." + strings.ReplaceAll(parts[1], "/", ".")
	}
	return name + "." + t.Name()
}

// docs returns the SwaggerDoc descriptions of a struct type.
func docs(t reflect.Type) map[string]string {
	if reflect.PointerTo(t).Implements(swaggerDocType) {
		return reflect.New(t).Interface().(interface{ SwaggerDoc() map[string]string }).SwaggerDoc()
	}
	if t.Implements(swaggerDocType) {
		return reflect.Zero(t).Interface().(interface{ SwaggerDoc() map[string]string }).SwaggerDoc()
	}
	return nil
}

func (b *builder) intOrString(format string) schema {
	if b.v3 {
		return schema{"x-kubernetes-int-or-string": true, "anyOf": []interface{}{schema{"type": "integer"}, schema{"type": "string"}}}
	}
	return schema{"type": "string", "format": format}
}

// special covers the types upstream describes by hand rather than by their
// Go structure.
func (b *builder) special(t reflect.Type) (schema, bool) {
	switch t {
	case timeType, microTimeType:
		return schema{"type": "string", "format": "date-time"}, true
	case durationType:
		return schema{"type": "string"}, true
	case quantityType:
		return b.intOrString("quantity"), true
	case intOrStrType:
		return b.intOrString("int-or-string"), true
	case rawExtType, fieldsV1Type:
		return schema{"type": "object"}, true
	}
	return nil, false
}

// refTo returns a reference to the definition of a named struct type,
// building it on first use.
func (b *builder) refTo(t reflect.Type) schema {
	name := definitionName(t)
	if _, ok := b.defs[name]; !ok {
		b.defs[name] = schema{} // placeholder: breaks cycles
		def, _ := b.special(t)
		if def == nil {
			def = b.structSchema(t)
		} else {
			def = copySchema(def)
		}
		if d := docs(t)[""]; d != "" {
			def["description"] = d
		}
		b.defs[name] = def
	}
	return schema{"$ref": b.ref + name}
}

func copySchema(s schema) schema {
	out := make(schema, len(s)+1)
	for k, v := range s {
		out[k] = v
	}
	return out
}

// schemaOf returns the schema of a field or element type.
func (b *builder) schemaOf(t reflect.Type) schema {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() == reflect.Struct {
		if t.Name() != "" && t.PkgPath() != "" {
			return b.refTo(t)
		}
		return b.structSchema(t)
	}
	switch t.Kind() {
	case reflect.String:
		return schema{"type": "string"}
	case reflect.Bool:
		return schema{"type": "boolean"}
	case reflect.Int32, reflect.Uint32, reflect.Int16, reflect.Uint16, reflect.Int8:
		return schema{"type": "integer", "format": "int32"}
	case reflect.Int, reflect.Int64, reflect.Uint64, reflect.Uint:
		return schema{"type": "integer", "format": "int64"}
	case reflect.Float32, reflect.Float64:
		return schema{"type": "number", "format": "double"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return schema{"type": "string", "format": "byte"}
		}
		return schema{"type": "array", "items": b.schemaOf(t.Elem())}
	case reflect.Map:
		return schema{"type": "object", "additionalProperties": b.schemaOf(t.Elem())}
	case reflect.Interface:
		return schema{"type": "object"}
	}
	return schema{}
}

// structSchema describes a struct's JSON fields, flattening inlined ones.
func (b *builder) structSchema(t reflect.Type) schema {
	props := schema{}
	b.addFields(t, props)
	s := schema{"type": "object"}
	if len(props) > 0 {
		s["properties"] = props
	}
	return s
}

func (b *builder) addFields(t reflect.Type, props schema) {
	doc := docs(t)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if (f.Anonymous && name == "") || strings.Contains(opts, "inline") {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				b.addFields(ft, props)
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		fs := b.schemaOf(f.Type)
		desc := doc[name]
		if ref, ok := fs["$ref"]; ok && (desc != "" || f.Tag.Get("patchStrategy") != "") {
			// A reference cannot carry siblings in OpenAPI, so described
			// references are wrapped in allOf, as upstream's v3 documents do.
			if b.v3 {
				fs = schema{"allOf": []interface{}{schema{"$ref": ref}}}
			}
		}
		if desc != "" {
			fs["description"] = desc
		}
		if ps := f.Tag.Get("patchStrategy"); ps != "" {
			fs["x-kubernetes-patch-strategy"] = ps
		}
		if pk := f.Tag.Get("patchMergeKey"); pk != "" {
			fs["x-kubernetes-patch-merge-key"] = pk
		}
		props[name] = fs
	}
}

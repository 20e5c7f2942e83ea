package tgi

import (
	"errors"

	"github.com/valyala/fastjson"
)

// frame is what the adapter reads from one /generate_stream event (TGI's
// StreamResponse, or its ErrorResponse). Its slices point into the parser's
// buffer and are valid until the next decode.
type frame struct {
	index    int
	hasIndex bool
	// text is token.text; special marks an added token (EOS, …) whose text
	// is never part of the output.
	text     []byte
	special  bool
	hasToken bool
	// final is set when generated_text is a string: the last frame.
	final bool
	// details (the final frame with details:true).
	hasDetails         bool
	finishReason       []byte
	generatedTokens    int
	hasGeneratedTokens bool
	inputLength        int
	hasInputLength     bool
	// An {"error","error_type"} frame.
	hasError bool
	errMsg   []byte
	errType  []byte
}

var (
	errNotObject = errors.New("frame is not a JSON object")
	errFieldType = errors.New("frame field has an unexpected type")
)

// decode parses data (one event's JSON) into f, reusing p. Missing and null
// fields are alike (ENGINES.md §5 pitfall 10); a field of another type than
// TGI sends is an error, as is anything but an object. Each object is
// walked once (Object.Get would rescan the keys per field); of duplicate
// keys the last wins.
func (f *frame) decode(p *fastjson.Parser, data []byte) error {
	*f = frame{}
	v, err := p.ParseBytes(data)
	if err != nil {
		return err
	}
	o, err := v.Object()
	if err != nil {
		return errNotObject
	}
	var errV, typeV, indexV, tokenV, genV, detailsV *fastjson.Value
	o.Visit(func(k []byte, v *fastjson.Value) {
		if v.Type() == fastjson.TypeNull {
			v = nil
		}
		switch string(k) {
		case "error":
			errV = v
		case "error_type":
			typeV = v
		case "index":
			indexV = v
		case "token":
			tokenV = v
		case "generated_text":
			genV = v
		case "details":
			detailsV = v
		}
	})
	if errV != nil {
		f.hasError = true
		if errV.Type() == fastjson.TypeString {
			f.errMsg = errV.GetStringBytes()
		}
		if typeV != nil && typeV.Type() == fastjson.TypeString {
			f.errType = typeV.GetStringBytes()
		}
		return nil
	}
	if f.index, f.hasIndex, err = count(indexV); err != nil {
		return err
	}
	if tokenV != nil {
		if err := f.token(tokenV); err != nil {
			return err
		}
	}
	if genV != nil {
		if genV.Type() != fastjson.TypeString {
			return errFieldType
		}
		f.final = true
	}
	if detailsV != nil {
		return f.details(detailsV)
	}
	return nil
}

// token reads the token object: text and special.
func (f *frame) token(v *fastjson.Value) error {
	o, err := v.Object()
	if err != nil {
		return errFieldType
	}
	f.hasToken = true
	o.Visit(func(k []byte, v *fastjson.Value) {
		if err != nil || v.Type() == fastjson.TypeNull {
			return
		}
		switch string(k) {
		case "text":
			if v.Type() != fastjson.TypeString {
				err = errFieldType
				return
			}
			f.text = v.GetStringBytes()
		case "special":
			b, berr := v.Bool()
			if berr != nil {
				err = errFieldType
				return
			}
			f.special = b
		}
	})
	return err
}

// details reads finish_reason, generated_tokens and input_length.
func (f *frame) details(v *fastjson.Value) error {
	o, err := v.Object()
	if err != nil {
		return errFieldType
	}
	f.hasDetails = true
	o.Visit(func(k []byte, v *fastjson.Value) {
		if err != nil || v.Type() == fastjson.TypeNull {
			return
		}
		switch string(k) {
		case "finish_reason":
			if v.Type() != fastjson.TypeString {
				err = errFieldType
				return
			}
			f.finishReason = v.GetStringBytes()
		case "generated_tokens":
			f.generatedTokens, f.hasGeneratedTokens, err = count(v)
		case "input_length":
			f.inputLength, f.hasInputLength, err = count(v)
		}
	})
	return err
}

// count reads a non-negative integer field; missing or null is absent.
func count(v *fastjson.Value) (int, bool, error) {
	if v == nil || v.Type() == fastjson.TypeNull {
		return 0, false, nil
	}
	n, err := v.Int()
	if err != nil || n < 0 {
		return 0, false, errFieldType
	}
	return n, true, nil
}

#!/bin/sh
exec helpkit platform infer --data {{ paths.test }} --model-dir {{ paths.model }} --output {{ paths.output_csv }} --config {{ paths.config }}
